from stablemirror.cli import main

main()
