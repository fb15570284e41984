"""What every stage runs on: file IO and stores, the training loop, precision, devices,
job running, config validation and code hashing."""
