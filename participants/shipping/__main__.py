from participants.shipping import main

main()
