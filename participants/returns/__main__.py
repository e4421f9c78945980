from participants.returns import main

main()
