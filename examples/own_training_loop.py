"""Your own network, data and loop, with nesy-gedi's knowledge and semantic loss (MNIST addition).

    python examples/own_training_loop.py --data-root DIR --steps 300 --test-pairs 1000 --seed 0

Each example is a pair of MNIST images; training sees only the digits of their sum (the
labels of logic/addition.logic with N=1: s[0] the tens digit, s[1] the units digit), never
the digits themselves. Prints the test accuracy of the predicted sums and of the digits.
"""
import argparse
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.datasets import MNIST

from nesy_gedi import KnowledgeCircuit, compile_file, semantic_loss

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--data-root", default=os.environ.get("NESY_GEDI_DATA", "data"),
                    help="torchvision's MNIST root (default $NESY_GEDI_DATA, else ./data)")
parser.add_argument("--steps", type=int, default=300, help="optimiser steps (batches of 32 pairs)")
parser.add_argument("--test-pairs", type=int, default=1000, help="test pairs to score (at most 5000)")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
torch.manual_seed(args.seed)

# The knowledge: concepts a[0], b[0] (the two digits), labels s[0], s[1] (the sum's digits).
logic = Path(__file__).resolve().parents[1] / "logic" / "addition.logic"
circuit = KnowledgeCircuit(compile_file(logic, {"N": 1}))


def pairs(train: bool):
    """Images [E, 2, 1, 28, 28] in [0, 1], digits [E, 2] and label values [E, 2] of E pairs."""
    mnist = MNIST(args.data_root, train=train, download=True)
    order = torch.randperm(len(mnist.targets))
    images = (mnist.data[order].float() / 255).view(-1, 2, 1, 28, 28)
    digits = mnist.targets[order].view(-1, 2)
    total = digits.sum(dim=1)
    return images, digits, torch.stack([total // 10, total % 10], dim=1)  # label VALUES, not positions


train_images, _, train_labels = pairs(train=True)
test_images, test_digits, test_labels = (t[:args.test_pairs] for t in pairs(train=False))

# Any network that maps one image to 10 logits; the circuit wants log-probabilities [B, 2, 10].
net = nn.Sequential(nn.Conv2d(1, 8, 5), nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(8, 16, 5), nn.MaxPool2d(2),
                    nn.ReLU(), nn.Flatten(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 10))


def concept_log_probs(images):
    return F.log_softmax(net(images.flatten(0, 1)), dim=-1).view(len(images), 2, 10)


optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
loss = torch.tensor(float("nan"))
for step in range(args.steps):
    rows = torch.randint(len(train_images), (32,))
    loss = semantic_loss(circuit(concept_log_probs(train_images[rows]), train_labels[rows]))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

net.eval()
with torch.no_grad():
    log_probs = concept_log_probs(test_images)
    predicted = circuit.predict(log_probs)  # label values [E, 2]: the most probable sum's digits
sum_accuracy = (predicted == test_labels).all(dim=1).float().mean().item()
digit_accuracy = (circuit.concept_values(log_probs.argmax(dim=-1)) == test_digits).float().mean().item()
print(f"steps {args.steps}  final loss {loss.item():.4f}  prediction {circuit.prediction_method}")
print(f"test sum accuracy {sum_accuracy:.4f}  test digit accuracy {digit_accuracy:.4f}")
