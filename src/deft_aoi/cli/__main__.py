from deft_aoi.cli.app import main

main()
