from stablemirror.cli.main import main

main()
