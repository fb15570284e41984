"""The MCTformer-V2 classifier (methods mct, mct_csd): the network and its training."""
