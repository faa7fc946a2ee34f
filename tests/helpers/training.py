"""What one optimizer step must change."""
import torch

# The bias of the DPB's last Linear adds one constant per head to every logit
# of a group, which softmax cancels: its gradient is rounding noise (~1e-10,
# exactly 0 on some CPUs), so an optimizer step may leave it where it is.
SOFTMAX_INVARIANT = 'position_bias.layers.2.2.bias'


def unchanged_parameters(module, before):
    """Names of ``module``'s parameters still equal to ``before[name]``,
    apart from the softmax-invariant DPB biases."""
    return [name for name, p in module.named_parameters()
            if not name.endswith(SOFTMAX_INVARIANT)
            and torch.equal(p.detach(), before[name])]
