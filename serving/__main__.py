from serving.entrypoint import main

main()
