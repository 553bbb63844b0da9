from localassist.cli.app import main

main()
