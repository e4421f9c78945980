from participants.payment import main

main()
