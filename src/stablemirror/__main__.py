from stablemirror.cli.entry import main

main()
