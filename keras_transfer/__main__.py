import sys

from keras_transfer.cli.entry_point import main

sys.exit(main())
