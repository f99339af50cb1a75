"""The README's "pruned backbone as a features_only feature extractor" example, on a model pruned here."""
import timm
import torch
import torch.nn.functional as F

import fggp_hub
from fggp_hub.pruning import sparsity_stats


def _pruned_resnet20() -> torch.nn.Module:
    """ResNet-20 pruned to 90 % by FGGP in ten steps on random data (stands in for a zoo model)."""
    torch.manual_seed(0)
    model = timm.create_model("fggp_resnet20_cifar")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    fggp_hub.Pruner(model, optimizer, final_sparsity=0.9, total_steps=10, interval=1)
    for _ in range(10):
        x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


def test_pruned_backbone_as_features_only_extractor():
    pruned = _pruned_resnet20()
    assert abs(sparsity_stats(pruned)["sparsity"] - 0.9) < 1e-3

    # as in the README, with `pruned = fggp_hub.load("resnet20-cifar10-s90")`
    backbone = timm.create_model("fggp_resnet20_cifar", features_only=True, out_indices=(1, 2, 3))
    backbone.load_state_dict({k: v for k, v in pruned.state_dict().items() if not k.startswith("fc.")})
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        features = backbone.eval()(x)
    assert [tuple(f.shape) for f in features] == [(1, 16, 32, 32), (1, 32, 16, 16), (1, 64, 8, 8)]
    assert backbone.feature_info.channels() == [16, 32, 64] and backbone.feature_info.reduction() == [1, 2, 4]

    # the extractor is the pruned network itself: same maps, same zeros
    with torch.no_grad():
        expected = pruned.forward_intermediates(x, indices=[1, 2, 3], intermediates_only=True)
    torch.testing.assert_close(features, expected, rtol=0, atol=0)
    convs = {n: p for n, p in backbone.named_parameters() if p.dim() == 4}
    assert convs and all(torch.equal(p == 0, pruned.get_parameter(n) == 0) for n, p in convs.items())
