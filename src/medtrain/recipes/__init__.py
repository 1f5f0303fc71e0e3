"""Built-in recipes, one folder each; they plug in through medtrain.registry."""
