import sys

from keras_transfer.cli import main

sys.exit(main())
