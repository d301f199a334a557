from tracking_server.launcher import main

main()
