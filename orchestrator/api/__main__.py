from orchestrator.api import main

main()
