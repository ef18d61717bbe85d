"""Fused training (``launcher=grouped launcher.mode=vmap``): the members of a group, same
model and data, trained at once with stacked weights, one vmapped forward/backward pass and one
optimizer step per batch, each member still its own run (see README "Fused groups")."""
