from participants.inventory import main

main()
