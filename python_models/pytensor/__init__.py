"""PyTensor (the maintained successor of Theano) implementations; they run in the legacy environment."""
