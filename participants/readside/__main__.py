from participants.readside import main

main()
