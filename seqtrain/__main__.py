from seqtrain.app import main

main()
