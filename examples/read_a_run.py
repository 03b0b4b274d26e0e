"""Read a `nesy-gedi train` run back and look at what its network learned; trains nothing.

    nesy-gedi train tasks/mnist_addition.yaml --out runs/addition
    python examples/read_a_run.py runs/addition [--split test] [--data-root DIR] [--device cpu]

Prints the split's label and concept accuracy (next to the ones final.json recorded), the
accuracy of each concept value (per digit) and sklearn's confusion matrix of the concepts.
"""
import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix

from nesy_gedi import load_run

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("run_dir", help="the --out folder of a `nesy-gedi train` run")
parser.add_argument("--split", default="test", help="train, val, test or test_ood (those the run has)")
parser.add_argument("--data-root", help="data folder (default: the run's data.root, else $NESY_GEDI_DATA)")
parser.add_argument("--device", help="cpu, cuda, ... (default: the run's train.device)")
args = parser.parse_args()

config, circuit, splits, perception, device = load_run(args.run_dir, args.data_root, args.device)
if args.split not in splits:
    parser.error(f"the run has no split {args.split!r} (it has {', '.join(splits)})")
split = splits[args.split]  # a TupleDataset: images, indices [E, P], concepts [E, P], labels [E, L]
perception.eval()  # load_run returns the network as built, in training mode

predicted_labels, predicted_concepts = [], []
with torch.no_grad():
    for rows in torch.arange(len(split)).split(config.train.eval_batch_size):
        images, _, _ = split.batch(rows)
        log_probs = F.log_softmax(perception(images.to(device)), dim=-1)  # [B, P, C]
        predicted_labels.append(circuit.predict(log_probs).cpu())  # label values [B, L]
        predicted_concepts.append(circuit.concept_values(log_probs.argmax(dim=-1)).cpu())  # values [B, P]
predicted_labels, predicted_concepts = torch.cat(predicted_labels), torch.cat(predicted_concepts)

label_accuracy = (predicted_labels == split.labels).all(dim=1).float().mean().item()
concept_accuracy = (predicted_concepts == split.concepts).float().mean().item()
print(f"run {args.run_dir}  task {config.name}  split {args.split}: {len(split)} examples, "
      f"{split.concepts.numel()} concepts  prediction {circuit.prediction_method}")
print(f"label accuracy {label_accuracy:.4f}")
print(f"concept accuracy {concept_accuracy:.4f}")
final = Path(args.run_dir) / "final.json"
if final.exists() and args.split == "test":
    recorded = json.loads(final.read_text())
    shown = {k: f"{recorded[k]:.4f}" if isinstance(recorded.get(k), float) else recorded.get(k)
             for k in ("test_label_accuracy", "test_concept_accuracy")}
    print(f"final.json records: label accuracy {shown['test_label_accuracy']}  "
          f"concept accuracy {shown['test_concept_accuracy']}")

values = list(circuit.concepts[0].domain)
matrix = confusion_matrix(split.concepts.flatten().numpy(), predicted_concepts.flatten().numpy(), labels=values)
print("per-value accuracy (recall):")
for value, row in zip(values, matrix):
    accuracy = row[values.index(value)] / row.sum() if row.sum() else float("nan")
    print(f"  {value}: {accuracy:.4f} of {row.sum()}")
print("confusion matrix (rows: true value, columns: predicted value):")
print("      " + " ".join(f"{v:>5}" for v in values))
for value, row in zip(values, matrix):
    print(f"{value:>5} " + " ".join(f"{n:>5}" for n in row))
