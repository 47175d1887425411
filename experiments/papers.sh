#!/usr/bin/env bash
# Issue 23: each mask method at its own paper's recipe (configs/papers/<method>/<setting>.yaml), 3 seeds,
# into results/papers/<target>/runs; resumable (rerun to continue; finished runs are skipped).
# Usage: experiments/papers.sh TARGET...   Targets: edge-popup-mnist, signed-supermask-mnist, signed-supermask-mnist-tf-pipeline,
#   signed-supermask-mnist-tf-trainer, signed-supermask-mnist-tf-absolute-threshold,
#   bernoulli-mnist, bernoulli-mnist-authors-pipeline, signed-supermask-cifar10-conv4 (100 epochs of CIFAR-10:
#   hours a seed on a CPU; SEEDS=0 runs one), iterand-cifar10-conv6 (IteRand, then edge-popup: 100 epochs each),
#   supsup-permuted-mnist (TASKS tasks, 50 by default: about 16 s a task at 1 thread; the paper ran 250),
#   supsup-permuted-mnist-s-neurons (the same with the authors' 100 output units)
# Env: MNIST_DIR (../shared/data/mnist), CIFAR_DIR (../shared/data/cifar10-jpeg75), THREADS (1), JOBS (1),
#   SEEDS (0,1,2), BF16 (false: fp32; auto: bf16 where the CPU has it, recorded per epoch), TASKS (50).
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/common.sh
THREADS=${THREADS:-1}
SEEDS=${SEEDS:-0,1,2}
for target in "$@"; do
  case "$target" in
    edge-popup-mnist)  # edge-popup at its paper's (CIFAR) recipe on LeNet-300-100, k = 0.5, against the same
      # network trained dense at that schedule (lr 0.01 from Kaiming normal, as the CIFAR runs' dense arm)
      out=results/papers/edge_popup_mnist
      for arm in "supermask.method=edge-popup" "${DENSE[*]}"; do
        # shellcheck disable=SC2086  # $arm: one or three overrides
        $SM sweep configs/papers/edge-popup/mnist_fc.yaml data.root="${MNIST_DIR:-../shared/data/mnist}" $arm \
          train.seed="$SEEDS" train.threads="$THREADS" train.bf16=false train.progress=lines --out "$out/runs" --jobs "$JOBS"
      done
      $SM report "$out/runs" --out "$out"
      ;;
    supsup-permuted-mnist | supsup-permuted-mnist-s-neurons)  # SupSup (GNu): one random LeNet-300-100, a
      # mask per permuted MNIST task, the task of each test batch of 128 inferred by one entropy gradient;
      # -s-neurons: with the authors' 100 output units for the 10 classes (90 "superfluous neurons")
      out=results/papers/supsup_permuted_mnist extra=0
      [ "$target" = supsup-permuted-mnist-s-neurons ] && out=${out}_s_neurons extra=90
      $SM sweep configs/papers/supsup/mnist_permuted.yaml data.root="${MNIST_DIR:-../shared/data/mnist}" \
        data.permuted_tasks="${TASKS:-50}" model.extra_outputs=$extra train.seed="$SEEDS" train.threads="$THREADS" \
        train.bf16=false train.progress=lines --out "$out/runs" --jobs "$JOBS"
      .venv/bin/python experiments/tasks_table.py "$out"
      ;;
    signed-supermask-mnist)
      out=results/papers/signed_supermask_mnist
      $SM sweep configs/papers/signed-supermask/mnist_fcn.yaml data.root="${MNIST_DIR:-../shared/data/mnist}" \
        train.seed="$SEEDS" train.threads="$THREADS" train.bf16=false train.progress=lines --out "$out/runs" --jobs "$JOBS"
      $SM report "$out/runs" --out "$out"
      ;;
    signed-supermask-mnist-tf-trainer)  # the authors' pipeline and the schedule and loss of their last trainer
      # version (model_trainer.py, read for understanding only): ExponentialDecay with its default rate 0.9,
      # not staircase, every 10 epochs of the real number of batches, on both lr and weight decay; Keras's
      # categorical cross-entropy of the model's softmax (clipped probabilities)
      out=results/papers/signed_supermask_mnist_tf_trainer
      $SM sweep configs/papers/signed-supermask/mnist_fcn.yaml data.root="${MNIST_DIR:-../shared/data/mnist}" \
        data.standardize=per_image data.shuffle=false optim.decay_rate=0.9 optim.staircase=false \
        optim.decay_epochs=10 optim.loss=clipped_probabilities \
        train.seed="$SEEDS" train.threads="$THREADS" train.bf16=false train.progress=lines --out "$out/runs" --jobs "$JOBS"
      $SM report "$out/runs" --out "$out"
      ;;
    signed-supermask-mnist-tf-absolute-threshold)  # the authors' earlier code (read for understanding
      # only): its update of each layer's threshold to 0.4 of the largest score never ran (a string compared
      # with `is`), so every layer kept its default threshold of 0.01 over Xavier scores; the authors'
      # pipeline, Keras's loss, the recipe's schedule (0.96 every 3,900 steps, staircase)
      out=results/papers/signed_supermask_mnist_tf_absolute_threshold
      $SM sweep configs/papers/signed-supermask/mnist_fcn_authors_code.yaml data.root="${MNIST_DIR:-../shared/data/mnist}" \
        train.seed="$SEEDS" train.threads="$THREADS" train.bf16=false train.progress=lines --out "$out/runs" --jobs "$JOBS"
      $SM report "$out/runs" --out "$out"
      ;;
    signed-supermask-mnist-tf-pipeline)  # the same recipe with the authors' input pipeline (their
      # data_preprocessor.py, read for understanding only): each image standardised by its own mean and std
      # (tf.image.per_image_standardization) and the training set in one fixed order (cached, never reshuffled)
      out=results/papers/signed_supermask_mnist_tf_pipeline
      $SM sweep configs/papers/signed-supermask/mnist_fcn.yaml data.root="${MNIST_DIR:-../shared/data/mnist}" \
        data.standardize=per_image data.shuffle=false \
        train.seed="$SEEDS" train.threads="$THREADS" train.bf16=false train.progress=lines --out "$out/runs" --jobs "$JOBS"
      $SM report "$out/runs" --out "$out"
      ;;
    bernoulli-mnist)  # Zhou et al.'s supermask: 2000 epochs, about 70 minutes a seed at 1 thread (AMD EPYC)
      out=results/papers/bernoulli_mnist
      $SM sweep configs/papers/bernoulli/mnist_fc.yaml data.root="${MNIST_DIR:-../shared/data/mnist}" \
        train.seed="$SEEDS" train.threads="$THREADS" train.bf16=false train.progress=lines --out "$out/runs" --jobs "$JOBS"
      $SM report "$out/runs" --out "$out"
      ;;
    bernoulli-mnist-authors-pipeline)  # the same recipe with the authors' input pipeline (their
      # download_mnist.py and train_supermask.py, read for understanding only): 55,000 training images (5,000
      # held out), pixels divided by 255 and not standardised
      out=results/papers/bernoulli_mnist_authors_pipeline
      $SM sweep configs/papers/bernoulli/mnist_fc.yaml data.root="${MNIST_DIR:-../shared/data/mnist}" \
        data.standardize=unit data.train_examples=55000 \
        train.seed="$SEEDS" train.threads="$THREADS" train.bf16=false train.progress=lines --out "$out/runs" --jobs "$JOBS"
      $SM report "$out/runs" --out "$out"
      ;;
    signed-supermask-cifar10-conv4)  # Koster et al.'s Conv4 with their CIFAR pipeline, CIFAR-10 (JPEG-75 rebuild)
      out=results/papers/signed_supermask_cifar10_conv4
      $SM sweep configs/papers/signed-supermask/cifar10_conv4.yaml data.name=cifar10-jpeg75 \
        data.root="${CIFAR_DIR:-../shared/data/cifar10-jpeg75}" train.seed="$SEEDS" train.threads="$THREADS" \
        train.bf16="${BF16:-false}" train.progress=lines --out "$out/runs" --jobs "$JOBS"
      $SM report "$out/runs" --out "$out"
      ;;
    iterand-cifar10-conv6)  # IteRand and edge-popup at the same k, recipe and seed (Chijiwa et al.'s claim),
      # CIFAR-10 (JPEG-75 rebuild), 100 epochs each; bf16 where the CPU has it (recorded per epoch)
      out=results/papers/iterand_cifar10_conv6
      for method in "supermask.method=iterand" "supermask.method=edge-popup supermask.options={}"; do
        # shellcheck disable=SC2086  # $method: one or two overrides
        $SM sweep configs/papers/iterand/cifar10_conv6.yaml data.name=cifar10-jpeg75 \
          data.root="${CIFAR_DIR:-../shared/data/cifar10-jpeg75}" $method \
          train.seed="$SEEDS" train.threads="$THREADS" train.bf16="${BF16:-auto}" train.progress=lines \
          --out "$out/runs" --jobs "$JOBS"
      done
      $SM report "$out/runs" --out "$out"
      ;;
    *) echo "unknown target $target (edge-popup-mnist, signed-supermask-mnist, signed-supermask-mnist-tf-pipeline, signed-supermask-mnist-tf-trainer, signed-supermask-mnist-tf-absolute-threshold, bernoulli-mnist, bernoulli-mnist-authors-pipeline, signed-supermask-cifar10-conv4, iterand-cifar10-conv6, supsup-permuted-mnist, supsup-permuted-mnist-s-neurons)" >&2; exit 2 ;;
  esac
done
