"""Images in, ``(uint8 image, int label)`` out: folders, built-in datasets, TFDS, arrays.

A set that fits in memory is decoded once, resized and held as a ``uint8`` array; a larger one
stays files (:class:`~keras_transfer.data.streaming.FileImages`) decoded batch by batch while
training, by the same decode and resize (:mod:`~keras_transfer.data.images`). Either way splits
are drawn from the list of images, exact and repeatable by seed. Everything becomes RGB in
[0, 255]; models preprocess inside themselves.

=============  ===========================================================================
module         what it holds
=============  ===========================================================================
images         decoding one file or encoded bytes, and resizing: the one path training,
               ``predict``, the export's signatures and the server share
image_sets     ``ImageSet`` and ``Splits``; splitting, sampling, class weights
image_folders  ``load_folder``: a folder of class sub-folders, bad files skipped and reported
builtin_sets   ELPV, Fashion-MNIST, digits, ``tfds:NAME`` (all offline but TFDS)
guitars        the synthetic guitar folder the notebook starts from
in_memory      ``streams``: whether a run holds its decoded images or streams their files
loading        ``load``: a folder or a built-in name to splits
streaming      files left on disk (``FileImages``) and features on disk (``DiskFeatures``)
augmentation   ``Views``: fixed, numbered augmented views of every image; ``jitter``
tf_datasets    ``to_dataset``: batched ``tf.data`` pipelines over any of the above
=============  ===========================================================================
"""

import lazy_loader as _lazy

# Submodules load on first use: importing one module of the package does not import the others
# (nor TensorFlow, where they need it), and `--help` stays fast.
__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    'augmentation': ['MAX_JITTER', 'VIEW_KINDS', 'Views', 'check_jitter', 'jitter', 'kind_for'],
    'builtin_sets': ['BUILTIN_DATASETS', 'FASHION_MNIST_CLASSES', 'FASHION_MNIST_DIRS', 'builtin', 'digits', 'elpv', 'fashion_mnist', 'from_tfds'],
    'guitars': ['sample_guitars'],
    'image_folders': ['IMAGE_EXTENSIONS', 'as_images', 'image_paths', 'load_folder', 'write_skipped_report'],
    'image_sets': ['ImageSet', 'Splits', 'batches', 'class_weights', 'imbalance', 'join', 'limit_per_class', 'split', 'split_classes', 'stratified_index', 'stratified_sample', 'take'],
    'images': ['read_image'],
    'in_memory': ['IN_MEMORY', 'READ_ONCE_IN_MEMORY_MAX', 'RunCost', 'streams'],
    'loading': ['from_directory', 'load'],
    'streaming': ['DiskFeatures', 'FileImages', 'SkippedFile', 'check_file', 'skip_reason'],
    'tf_datasets': ['Streams', 'batch_stream', 'jittered', 'mixup', 'shards_by_file', 'stream_size', 'to_dataset'],
})
