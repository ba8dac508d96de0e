"""Training: the generic trainer (`trainer`), its step (`step`), the audio and image tasks, and
`run.train(config, workdir)`, what train.py calls. Importing this package loads none of them."""
