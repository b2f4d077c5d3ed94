from fashionmlp.cli import main

main()
