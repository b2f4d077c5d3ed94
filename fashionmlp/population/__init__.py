"""The population engine: many models of one architecture trained at once, each into its own ordinary run
folder. stack.py: the members' parameters stacked and the batched forward pass; data.py: the shared images and
each seed's split and batches; loop.py: the epoch loop; evaluate.py: evaluating all members at once; run.py:
building (or continuing) a population from configs."""

from fashionmlp.population.run import (
    MemberSpec,
    check_one_shape,
    resume_population,
    setup_population,
    train_population,
)

__all__ = ["MemberSpec", "check_one_shape", "resume_population", "setup_population", "train_population"]
