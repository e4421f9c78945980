from orchestrator.runtime.service import main

main()
