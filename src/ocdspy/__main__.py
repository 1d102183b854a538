from ocdspy.cli import main

main()
