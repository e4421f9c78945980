from orchestrator.readside import main

main()
