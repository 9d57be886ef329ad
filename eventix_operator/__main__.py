from eventix_operator.cli.main import main

main()
