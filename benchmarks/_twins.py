"""PyTorch twins of jaxgrad's models, built from the same Flax weights (NHWC <-> NCHW)."""

from __future__ import annotations

import numpy as np


def _conv(torch, p, stride=1, padding=0):
    k = np.asarray(p["kernel"])  # HWIO
    c = torch.nn.Conv2d(
        k.shape[2], k.shape[3], k.shape[:2], stride=stride, padding=padding, bias="bias" in p
    )
    c.weight.data = torch.tensor(k.transpose(3, 2, 0, 1).copy())
    if "bias" in p:
        c.bias.data = torch.tensor(np.asarray(p["bias"]).copy())
    return c


def _dense(torch, p):
    k = np.asarray(p["kernel"])
    d = torch.nn.Linear(*k.shape)
    d.weight.data = torch.tensor(k.T.copy())
    d.bias.data = torch.tensor(np.asarray(p["bias"]).copy())
    return d


def _bn(torch, p, s, eps=1e-5):
    b = torch.nn.BatchNorm2d(len(np.asarray(p["scale"])), eps=eps)
    b.weight.data = torch.tensor(np.asarray(p["scale"]).copy())
    b.bias.data = torch.tensor(np.asarray(p["bias"]).copy())
    b.running_mean = torch.tensor(np.asarray(s["mean"]).copy())
    b.running_var = torch.tensor(np.asarray(s["var"]).copy())
    return b


def mlp(variables):
    import torch

    params = variables["params"]
    names = sorted((k for k in params if k.startswith("hidden")), key=lambda k: int(k[6:]))
    layers = [torch.nn.Flatten()]
    for name in names:
        layers += [_dense(torch, params[name]), torch.nn.ReLU()]
    layers.append(_dense(torch, params["logits"]))
    return torch.nn.Sequential(*layers).eval()


def cnn(variables):
    import torch

    params = variables["params"]

    class CNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = _conv(torch, params["hidden1"], padding=2)
            self.c2 = _conv(torch, params["hidden2"], padding=2)
            self.fc1 = _dense(torch, params["fc1"])
            self.out = _dense(torch, params["softmax_linear"])
            self.act1, self.act2, self.act3 = (torch.nn.ReLU() for _ in range(3))

        def forward(self, x):
            x = torch.max_pool2d(self.act1(self.c1(x)), 2)
            x = torch.max_pool2d(self.act2(self.c2(x)), 2)
            x = x.permute(0, 2, 3, 1).flatten(1)  # Flax's NHWC flattening order
            return self.out(self.act3(self.fc1(x)))

    return CNN().eval()


def resnet(variables):
    import torch

    params, stats = variables["params"], variables["batch_stats"]

    class Block(torch.nn.Module):
        def __init__(self, p, s, stride):
            super().__init__()
            self.conv1 = _conv(torch, p["conv1"], stride, 1)
            self.bn1 = _bn(torch, p["bn1"], s["bn1"])
            self.conv2 = _conv(torch, p["conv2"], 1, 1)
            self.bn2 = _bn(torch, p["bn2"], s["bn2"])
            self.short = torch.nn.Sequential()
            if "shortcut_conv" in p:
                self.short = torch.nn.Sequential(
                    _conv(torch, p["shortcut_conv"], stride, 0),
                    _bn(torch, p["shortcut_bn"], s["shortcut_bn"]),
                )
            self.act1, self.act2 = torch.nn.ReLU(), torch.nn.ReLU()

        def forward(self, x):
            y = self.act1(self.bn1(self.conv1(x)))
            return self.act2(self.bn2(self.conv2(y)) + self.short(x))

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Sequential(
                _conv(torch, params["stem_conv"], 1, 1),
                _bn(torch, params["stem_bn"], stats["stem_bn"]),
                torch.nn.ReLU(),
            )
            blocks = sorted(k for k in params if k.startswith("layer"))
            self.layers = torch.nn.Sequential(
                *(
                    Block(
                        params[b],
                        stats[b],
                        2 if b.endswith("block1") and b != "layer1_block1" else 1,
                    )
                    for b in blocks
                )
            )
            self.fc = _dense(torch, params["logits"])

        def forward(self, x):
            return self.fc(self.layers(self.stem(x)).mean((2, 3)))

    return Net().eval()
