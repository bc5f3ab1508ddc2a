"""What the tests share: random module trees, and the oracles they are checked against.

- ``module_trees``: a hypothesis strategy for hard module trees, PyTorch as
  the oracle of each drop-in, and running a check in a child interpreter;
- ``state_dict_oracle``: ``state_dict`` compared with PyTorch's, with hooks,
  extra state and overriding classes;
- ``tree_oracle``: the walk-once records rebuilt in pure Python;
- ``diff_oracle``: each field of a comparison from float64 torch.
"""
