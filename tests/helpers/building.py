"""Building full-size models fast, for tests that need only their structure.

Drawing the initial weights of a full-size detector or segmentor (the
``reset_parameters`` of every Linear, conv and norm layer) takes seconds on
a CPU; parameter counts, optimizer parameter groups and strict loading of a
checkpoint's keys do not depend on those values.
"""
import contextlib
from typing import Iterator
from unittest import mock

import torch

# The torch.nn.init functions that fill a tensor in place and return it.
FILL_FUNCTIONS = ('uniform_', 'normal_', 'trunc_normal_', 'constant_',
                  'ones_', 'zeros_', 'eye_', 'dirac_', 'xavier_uniform_',
                  'xavier_normal_', 'kaiming_uniform_', 'kaiming_normal_',
                  'orthogonal_', 'sparse_')


@contextlib.contextmanager
def uninitialised_weights() -> Iterator[None]:
    """Inside, ``torch.nn.init``'s fill functions return their tensor
    unchanged, so modules built there keep ``torch.empty``'s arbitrary
    values: use it to count parameters, group them or load a state dict
    over them, never to run the model on those values."""
    with contextlib.ExitStack() as stack:
        for name in FILL_FUNCTIONS:
            stack.enter_context(
                mock.patch.object(torch.nn.init, name,
                                  lambda tensor, *args, **kwargs: tensor))
        yield
