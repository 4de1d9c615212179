from worker.stack import main

main()
