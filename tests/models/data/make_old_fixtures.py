"""How the checkpoint fixtures here were made: run once, from the repo root, on commit 581cc95
(the model code before the timm-conventions rewrite of issue 16).

Kept as a record only. Re-running it with newer model code would overwrite the fixtures with
new-code output and so defeat ``test_old_checkpoints.py``: do not.
"""
import json
import subprocess

import timm
import torch
from torch import nn
from safetensors.torch import save_file
import fggp_hub  # noqa

commit = subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()
out = "tests/models/data"
torch.manual_seed(0)
x = torch.randn(2, 3, 32, 32)

def perturb(model, sparsity=0.9):
    """Non-trivial BN stats and biases, 90% of each conv/linear weight zeroed by magnitude (like a pruned export)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if m.bias is not None:
                    m.bias.normal_(0, 0.1)
                w = m.weight
                k = int(w.numel() * sparsity)
                thr = w.abs().flatten().kthvalue(k).values
                w.mul_((w.abs() > thr).to(w.dtype))
    return model.eval()

cases = {
    "resnet20": ("fggp_resnet20_cifar", {}),
    "tiny_bottleneck_resnet": ("fggp_resnet50_cifar", dict(layers=(1, 1, 1, 1), widths=(4, 8, 8, 8), stem_width=8)),
    "tiny_vgg": ("fggp_vgg19_bn_cifar", dict(layout=(8, "M", 16, 16, "M", 16, "M", 16, 16))),
}
for i, (tag, (arch, kwargs)) in enumerate(cases.items()):
    torch.manual_seed(100 + i)
    model = perturb(timm.create_model(arch, **kwargs))
    with torch.no_grad():
        logits = model(x)
    meta = {"architecture": arch, "model_args": json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}), "commit": commit}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out}/{tag}_old.safetensors", metadata=meta)
    save_file({"input": x, "logits": logits}, f"{out}/{tag}_old_logits.safetensors", metadata={"commit": commit})
    print(tag, logits[0, :4])

keys = {}
for arch in ("fggp_resnet20_cifar", "fggp_resnet50_cifar", "fggp_vgg19_bn_cifar"):
    sd = timm.create_model(arch).state_dict()
    keys[arch] = {k: list(v.shape) for k, v in sd.items()}
with open(f"{out}/state_dict_keys_old.json", "w") as f:
    json.dump({"commit": commit, "keys": keys}, f, indent=0, sort_keys=False)
    f.write("\n")
