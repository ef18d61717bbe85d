"""CNN (and MLP) classifiers; each takes the data's channels, image size and class count."""
