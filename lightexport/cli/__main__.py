from lightexport.cli import main

main()
