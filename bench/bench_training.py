"""Training and evaluation speed, each lever against the paper's step, measured in one run: `make bench`.

    python -m bench.bench_training                       # everything (about 70 min on 2 CPU cores)
    python -m bench.bench_training --networks=mobilenet  # the headline rows only
    python -m bench.bench_training --sections=training --steps=3 --rounds=3
    python -m bench.bench_training --sections=training --networks=mobilenet --batch=32 --memory=25

Sections (all printed as Markdown tables, with the machine they were measured on):
- autotune: the seconds precision/memory_format auto spend measuring on the first run of a cell, and on later ones.
- wholerun: train.py with its defaults against the paper's own loop (bench/paper_loop.py) and against train.py with
  the paper's computation pinned (fp32 NCHW), 2 epochs of 1024 images.
- training: input images/s of the real train.py step (batch 128 from ExperimentData, a memory set of 100 for
  memory heads, forward, backward, SGD update) per network x modality x lever, as the median over interleaved
  rounds, and each lever's ratio to the paper's step (fp32, contiguous NCHW, glibc's default allocator).
  Levers: the allocator (runtime.keep_freed_memory), channels_last, bf16 autocast (every layer, and with the
  depthwise convolutions that depthwise_fp32: auto measures faster in fp32 computed there); 'auto' is what
  precision: auto + memory_format: auto pick on this machine (measured by core/autotune.py for each cell). On a CUDA GPU: fp16 + GradScaler,
  channels_last, torch.compile.
- depthwise: each depthwise convolution's forward and backward in bf16 and fp32, and which depthwise_fp32: auto
  computes in fp32 (MobileNetV2, EfficientNet, ShuffleNetV2).
- shuffle: ShuffleNetV2's channels_last steps with its channel shuffle keeping channels_last, against the
  published shuffle that returns NCHW.
- evaluation: a memory model's test accuracy over 5 memory draws plus explanation accuracy, on features
  encoded once (core/evaluation.py) against the batch-by-batch path that encodes test batch and memory anew
  for every batch and draw.
- layer: MemoryWrapLayer l2 and dot against cosine (forward + backward, B=500, M=100, D=1280).
- data: the share of an epoch spent producing batches and memory sets.
- parallel: wall time and run-epochs per second of DIGITS runs (2 epochs) in 1 process vs train.py
  --parallel_runs=2 (1, 4, 8, 16 on a GPU, 16 runs).
"""
import argparse
import datetime
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import torch

REPO = pathlib.Path(__file__).resolve().parent.parent
import datasets
import readers
from architectures import build_model
from architectures.memory import MemoryWrapLayer
from core import evaluation, layer_precision, runtime, training
from core.execution import choose_execution
from core.runtime import Execution

NETWORKS = ["mobilenet", "resnet18", "efficientnet", "googlenet", "shufflenet", "densenet"]
WARMUP_STEPS = 2  # per lever, before the timed rounds (kernel creation); their cost is reported on its own
BATCH, MEMORY, TRAIN_EXAMPLES = 128, 100, 5000


def fake_cifar(count: int, seed: int = 0) -> datasets.ImageSet:
    """CIFAR10-shaped uint8 images (random pixels: speed does not depend on content)."""
    generator = torch.Generator().manual_seed(seed)
    return datasets.ImageSet(torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=generator),
                             torch.randint(0, 10, (count,), generator=generator), readers.CIFAR10_CLASSES)


class Lever:
    def __init__(self, name, execution, allocator=True, compile_mode=None):
        self.name, self.execution, self.allocator, self.compile_mode = name, execution, allocator, compile_mode


def levers_for(device: torch.device, all_bf16: bool):
    contiguous, channels_last = torch.contiguous_format, torch.channels_last
    if device.type == "cuda":
        return [Lever("fp32 NCHW (paper's code without AMP)", Execution(None, contiguous)),
                Lever("fp16 NCHW (paper)", Execution(torch.float16, contiguous)),
                Lever("fp16 channels_last", Execution(torch.float16, channels_last)),
                Lever("fp16 channels_last compile", Execution(torch.float16, channels_last), compile_mode="default"),
                Lever("fp16 channels_last compile+CUDA graphs", Execution(torch.float16, channels_last),
                      compile_mode="reduce-overhead")]
    levers = [Lever("fp32 NCHW (paper)", Execution(None, contiguous), allocator=False),
              Lever("+ allocator", Execution(None, contiguous)),
              Lever("+ channels_last", Execution(None, channels_last))]
    if runtime.native_bf16() or all_bf16:  # emulated bf16 is ~5x slower: measured on mobilenet only, below
        levers += [Lever("bf16 NCHW", Execution(torch.bfloat16, contiguous)),
                   Lever("bf16 channels_last", Execution(torch.bfloat16, channels_last))]
    return levers


def make_step(network, modality, lever, device, data):
    torch.manual_seed(0)
    model = build_model(network, modality, 10).to(device).to(memory_format=lever.execution.memory_format).train()
    layer_precision.apply(model, lever.execution.fp32_layers)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=True)
    scaler = torch.amp.GradScaler(device.type, enabled=lever.execution.autocast == torch.float16)
    if lever.compile_mode:
        model = torch.compile(model, mode=lever.compile_mode)
    generator = torch.Generator().manual_seed(0)
    batches = iter(())

    def step():
        nonlocal batches
        batch = next(batches, None)
        if batch is None:
            batches = data.batches(BATCH, generator)
            batch = next(batches)
        memory = data.memory_set(generator) if modality != "std" else None
        loss, _ = training.training_step(model, optimizer, scaler, *batch, memory, lever.execution, device)
        loss.item()  # the train.py loop reads the loss every step
    return step


def autotuned(network, modality, device, cache_folder, settings=("precision=auto", "memory_format=auto")):
    """How train.py computes this cell on this machine with these settings (core/autotune.py), measured once: with
    the defaults, what precision/memory_format auto choose; with bf16 set, the depthwise convolutions
    depthwise_fp32: auto puts in fp32."""
    from core.config import load_config

    config = load_config(REPO / "config" / "train.yaml", {"model": network, "dataset": "CIFAR10"},
                         [f"autotune_cache={cache_folder}/cache.json", *settings])
    return choose_execution(config, modality, device, BATCH, MEMORY if modality != "std" else 0)[0]


def depthwise_levers(network, modality, device, cache_folder, auto):
    """bf16 as train.py computes it where the network has depthwise convolutions: those depthwise_fp32: auto
    measures faster in fp32 computed there (the autotune's own answer where it chose that lever)."""
    if device.type != "cpu" or not layer_precision.depthwise(build_model(network, modality, 10)):
        return []
    levers = []
    for fmt, name in ((torch.contiguous_format, "contiguous"), (torch.channels_last, "channels_last")):
        execution = auto if auto.autocast == torch.bfloat16 and auto.memory_format == fmt else autotuned(
            network, modality, device, cache_folder, ("precision=bf16", f"memory_format={name}"))
        if execution.fp32_layers:
            label = "NCHW" if fmt == torch.contiguous_format else "channels_last"
            levers.append(Lever(f"bf16 {label} + fp32 depthwise", execution))
    return levers


def training_data(device):
    """The training sections' data: TRAIN_EXAMPLES CIFAR10-shaped images, a memory of MEMORY."""
    train, test = fake_cifar(TRAIN_EXAMPLES + 6000), fake_cifar(10)
    return datasets.ExperimentData.build(datasets.get_spec("CIFAR10"), train, test, TRAIN_EXAMPLES, 6000, seed=0,
                                         mem_examples=MEMORY, device=device)


def measure_training(networks, modalities, device, steps, rounds, all_bf16):
    data = training_data(device)
    rows, stability = [], []
    tuned_cache = tempfile.mkdtemp(prefix="bench-autotune-")
    for network in networks:
        for modality in modalities:
            auto = autotuned(network, modality, device, tuned_cache)
            levers = levers_for(device, all_bf16 or network == "mobilenet")
            if runtime.native_bf16() or all_bf16:
                levers += depthwise_levers(network, modality, device, tuned_cache, auto)
            trials, first_step = [], {}
            for lever in levers:
                runtime.keep_freed_memory(lever.allocator)
                try:
                    trials.append((lever, make_step(network, modality, lever, device, data), []))
                    started = time.perf_counter()
                    for _ in range(WARMUP_STEPS):  # kernel creation per shape and lever (and compilation)
                        trials[-1][1]()
                        first_step.setdefault(lever.name, time.perf_counter() - started)
                except Exception as error:  # a lever that does not run here is reported, not fatal
                    print(f"  {network} {modality} {lever.name}: failed ({type(error).__name__}: {error})")
                    trials.pop()
            for _ in range(rounds):  # interleaved, so that a slow moment of the machine hits every lever
                for lever, step, speeds in trials:
                    runtime.keep_freed_memory(lever.allocator)
                    step()
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    start = time.perf_counter()
                    for _ in range(steps):
                        step()
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    speeds.append(BATCH * steps / (time.perf_counter() - start))
            speeds = {lever.name: statistics.median(values) for lever, _, values in trials}
            auto_name = next(lever.name for lever, _, _ in trials if lever.allocator == (device.type == "cpu")
                             and lever.execution == auto and not lever.compile_mode)
            winners = [max(trials, key=lambda t: t[2][r])[0].name for r in range(rounds)]
            rows.append((network, modality, speeds, auto_name))
            stability.append((network, modality, {lever.name: (min(v), max(v)) for lever, _, v in trials},
                              first_step, winners))
            print(f"  measured {network} {modality}: " + ", ".join(f"{k} {v:.1f}" for k, v in speeds.items()),
                  flush=True)
    runtime.keep_freed_memory(device.type == "cpu")
    names = list(dict.fromkeys(name for _, _, speeds, _ in rows for name in speeds))
    print(f"\n### Training: input images/s (batch {BATCH}, memory {MEMORY}, SGD; median of {rounds} rounds of "
          f"{steps} steps); ratio to the paper's step in brackets\n")
    print("| network | modality | " + " | ".join(names) + " | auto = | auto / paper | auto / best lever |")
    print("|---|---|" + "---|" * (len(names) + 3))
    for network, modality, speeds, auto_name in rows:
        base = speeds[names[0]]
        cells = [f"{speeds[n]:.1f} ({speeds[n] / base:.2f}x)" if n in speeds else "-" for n in names]
        print(f"| {network} | {modality} | " + " | ".join(cells) + f" | {auto_name} | "
              f"**{speeds[auto_name] / base:.2f}x** | {speeds[auto_name] / max(speeds.values()):.2f} |")
    print(f"\n### Training: steady state against the first steps (kernel creation), and the spread over the {rounds} "
          f"rounds\n")
    print("| network | modality | lever | first step s | images/s min-max over rounds | fastest lever in every round |")
    print("|---|---|---|---|---|---|")
    for network, modality, spread, first_step, winners in stability:
        same = winners[0] if len(set(winners)) == 1 else "differs: " + ", ".join(winners)
        for name, (low, high) in spread.items():
            print(f"| {network} | {modality} | {name} | {first_step.get(name, float('nan')):.2f} | {low:.1f}-{high:.1f} "
                  f"| {same} |")
            same = ""
    return rows


def measure_evaluation(device, test_count=2000, pool=1000, batch_size=500, draws=5):
    """Test accuracy (5 draws) + explanation accuracy (5 draws), cached features vs batch by batch."""
    from explanations import explanation_scores

    train, test = fake_cifar(pool + 100, seed=1), fake_cifar(test_count, seed=2)
    data = datasets.ExperimentData.build(datasets.get_spec("CIFAR10"), train, test, pool, 100, seed=0,
                                         mem_examples=MEMORY, device=device)
    torch.manual_seed(0)
    model = build_model("mobilenet", "encoder_memory", 10).to(device).eval()

    def reference():  # the paper's protocol: every batch and draw encodes its test batch and memory sets
        generator, auxiliary = evaluation.eval_generators(0)
        with torch.no_grad():
            for _ in range(draws):  # test accuracy
                for start in range(0, test_count, batch_size):
                    images, _ = data.test_batch(torch.arange(start, min(start + batch_size, test_count)))
                    model(images, data.memory_batch(data.draw_memory(generator))).argmax(1)
            for _ in range(draws):  # explanation accuracy: the memory samples classified with another memory set
                for start in range(0, test_count, batch_size):
                    images, _ = data.test_batch(torch.arange(start, min(start + batch_size, test_count)))
                    memory = data.memory_batch(data.draw_memory(generator))
                    model(images, memory, return_weights=True)
                    model(memory, data.memory_batch(data.draw_memory(auxiliary))).argmax(1)

    def cached():
        cache = evaluation.FeatureCache.build(model, data, batch_size, seed=0, draws=draws)
        evaluation.evaluate(model, cache)
        explanation_scores(model, cache)

    times = {}
    for name, function in (("batch by batch (reference)", reference), ("features encoded once", cached)):
        start = time.perf_counter()
        function()
        times[name] = time.perf_counter() - start
    base = times["batch by batch (reference)"]
    print(f"\n### Evaluation: mobilenet encoder_memory, {test_count} test images, memory pool {pool}, {draws} draws "
          f"of test accuracy + {draws} of explanation accuracy\n")
    print("| path | seconds | speed-up |\n|---|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds:.1f} | {base / seconds:.1f}x |")


def measure_layer(repeats=10):
    from bench.bench_memory_layer import time_layer

    torch.manual_seed(0)
    x, memory = torch.randn(500, 1280, requires_grad=True), torch.randn(100, 1280, requires_grad=True)
    times = {d: time_layer(MemoryWrapLayer(1280, 10, distance=d), x, memory, repeats) for d in ("cosine", "l2", "dot")}
    print("\n### MemoryWrapLayer (forward + backward, B=500, M=100, D=1280; target <= 1.15x cosine)\n")
    print("| distance | ms / call | ratio to cosine |\n|---|---|---|")
    for distance, seconds in times.items():
        print(f"| {distance} | {seconds * 1e3:.1f} | {seconds / times['cosine']:.2f} |")


def measure_data(device, training_rows):
    data = training_data(device)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    steps = 0
    for images, labels in data.batches(BATCH, generator):
        memory = data.memory_set(generator)
        steps += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    produce = time.perf_counter() - start
    print(f"\n### Data: one epoch of {TRAIN_EXAMPLES} examples ({steps} steps of {BATCH} + memory {MEMORY})\n")
    print("| training (auto) | epoch seconds | batch production seconds | share |\n|---|---|---|---|")
    for network, modality, speeds, auto_name in training_rows:
        if modality != "std":
            epoch = steps * BATCH / speeds[auto_name]
            print(f"| {network} {modality} | {epoch:.1f} | {produce:.3f} | {100 * produce / (epoch + produce):.2f}% |")


def measure_autotune(networks, modalities, device):
    """What precision/memory_format auto cost a run: the first run of a cell measures, later ones read the cache."""
    from core.config import load_config

    print(f"\n### Autotune: seconds the first run of a cell spends choosing its levers, and a later run (batch {BATCH}, "
          f"memory {MEMORY})\n")
    print("| network | modality | chosen | levers warmed up / timed (rounds) | first run s | later runs s |\n"
          "|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for network in networks:
            for modality in modalities:
                config = load_config(REPO / "config" / "train.yaml", {"model": network, "dataset": "CIFAR10"},
                                     [f"autotune_cache={folder}/cache.json", "precision=auto", "memory_format=auto"])
                times, infos = [], []
                for _ in range(2):
                    start = time.perf_counter()
                    infos.append(choose_execution(config, modality, device, BATCH,
                                                           MEMORY if modality != "std" else 0)[1])
                    times.append(time.perf_counter() - start)
                first = infos[0]
                measured = (f"{len(first['timings'])} / {len(first['timed'])} ({first['rounds']})"
                            if "timings" in first else "—")
                print(f"| {network} | {modality} | {first.get('choice', '—')} | {measured} | {times[0]:.1f} | "
                      f"{times[1]:.2f} |", flush=True)


def measure_whole_run(device, images=1024, epochs=2):
    """What a user feels: train.py with its defaults (autotune measured in the first run, read in the second) against
    the paper's own loop (bench/paper_loop.py: the official code's per-image data pipeline, fp32 NCHW, five evaluation
    passes for memory models) and against train.py with the paper's computation pinned (fp32, contiguous NCHW),
    MobileNetV2, 2 epochs of 1024 real CIFAR-10 images (the shared subset; the paper's loop reads CIFAR-10 only, so
    on DIGITS its column is empty), one process each, wall seconds of the whole command."""
    subset = REPO.parent / "shared" / "data" / "cifar10-subset"
    if (subset / "cifar-10-batches-py").is_dir():
        data = ["--dataset=CIFAR10", f"--set=dataset_dir={subset}", "--set=download=false", "--set=CIFAR10.val_examples=600"]
        name = "CIFAR-10 subset"
    else:
        data = ["--dataset=DIGITS", "--set=DIGITS={num_classes: 10, num_epochs: 2, mem_examples: 100, val_examples: 200}"]
        name, images = "DIGITS", min(images, 1097)
    print(f"\n### Whole run: train.py, MobileNetV2, {images} {name} images x {epochs} epochs, 1 run (training and "
          f"evaluation, wall seconds of the command)\n")
    print(f"| modality | paper's loop (official code, {device.type}) | train.py, fp32 NCHW pinned (the paper's CPU "
          "computation) | defaults, first run (autotune measures) | defaults, cached | speed-up over the paper's loop "
          "(cached) | speed-up over the paper's computation (cached) |\n|---|---|---|---|---|---|---|")

    def timed(command):
        start = time.perf_counter()
        subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - start
    for modality in ("std", "encoder_memory"):
        with tempfile.TemporaryDirectory() as folder:
            paper_loop = None
            if name != "DIGITS":
                paper_loop = timed([sys.executable, "-m", "bench.paper_loop", f"--modality={modality}", "--model=mobilenet",
                                    f"--train_examples={images}", f"--epochs={epochs}", f"--dataset_dir={subset}",
                                    f"--device={device.type}"])  # on a GPU: the official fp16 + GradScaler step
            base = [sys.executable, "train.py", "--config=config/train.yaml", f"--modality={modality}", "--model=mobilenet",
                    f"--train_examples={images}", f"--epochs={epochs}", "--runs=1", *data,
                    f"--set=autotune_cache={folder}/cache.json"]
            seconds = [timed([*base, *extra, f"--output_dir={folder}/{output}"])
                       for extra, output in ((["--precision=fp32", "--memory_format=contiguous"], "paper"),
                                             ([], "first"), ([], "second"))]
        over_loop = f"**{paper_loop / seconds[2]:.2f}x**" if paper_loop else "—"
        print(f"| {modality} | {f'{paper_loop:.1f}' if paper_loop else '—'} | {seconds[0]:.1f} | {seconds[1]:.1f} | "
              f"{seconds[2]:.1f} | {over_loop} | **{seconds[0] / seconds[2]:.2f}x** |", flush=True)


def measure_depthwise(networks, device):
    """Each depthwise convolution's forward and backward in bf16 and in fp32 at the training batch, as
    depthwise_fp32: auto measures it (core/layer_precision.py), for the std model of each network that has them."""
    if device.type != "cpu":
        return
    print(f"\n### Depthwise convolutions: one forward and backward at a batch of {BATCH}, ms, as depthwise_fp32: auto "
          f"times them (bf16: as autocast makes it)\n")
    print("| network | layer | input | stride | kernel | bf16 ms | fp32 ms | computes in |\n|---|---|---|---|---|---|---|---|")
    for network in networks:
        torch.manual_seed(0)
        model = build_model(network, "std", 10).to(device).to(memory_format=torch.channels_last).train()
        layers = layer_precision.depthwise(model)
        if not layers:
            continue
        images = torch.randn(BATCH, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
        found = layer_precision.measure(model, lambda: model(images), torch.channels_last)
        for name, layer in layers.items():
            seconds = found["timings"][name]
            print(f"| {network} | {name.removeprefix('encoder.')} | {'x'.join(map(str, found['inputs'][name][1:]))} | "
                  f"{layer.stride[0]} | {layer.kernel_size[0]} | {seconds['bf16']:.1f} | {seconds['fp32']:.1f} | "
                  f"{'fp32' if name in found['fp32'] else 'bf16'} |", flush=True)
        print(f"| {network} | all {len(layers)} ({found['seconds']:.1f} s to measure) | | | | "
              f"{sum(t['bf16'] for t in found['timings'].values()):.1f} | "
              f"{sum(t['fp32'] for t in found['timings'].values()):.1f} | {len(found['fp32'])} in fp32 |")


def measure_parallel(device, worker_counts, epochs=2):
    """Several runs at once: as many DIGITS encoder_memory runs as the largest worker count (at least 4; 1000 images,
    config/digits.yaml) with train.py --parallel_runs=N, wall time and run-epochs of 1000 images per second."""
    runs = max(4, *worker_counts)
    print(f"\n### Parallel runs: {runs} DIGITS encoder_memory runs (config/digits.yaml, 1000 images, {epochs} epochs), "
          f"wall time\n")
    print("| processes | threads each | seconds | runs / hour | run-epochs / s | speed-up |\n|---|---|---|---|---|---|")
    base = None
    for workers in worker_counts:
        with tempfile.TemporaryDirectory() as output:
            command = [sys.executable, "train.py", "--modality=encoder_memory", "--config=config/digits.yaml",
                       f"--runs={runs}", f"--epochs={epochs}", f"--parallel_runs={workers}", f"--output_dir={output}"]
            start = time.perf_counter()
            subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            seconds = time.perf_counter() - start
        base = base or seconds
        threads = max(1, torch.get_num_threads() // workers) if device.type == "cpu" else "-"
        print(f"| {workers} | {threads} | {seconds:.1f} | {runs * 3600 / seconds:.0f} | {runs * epochs / seconds:.2f} | "
              f"{base / seconds:.2f}x |")


def published_shuffle(x, groups=2):
    """ShuffleNetV2's channel shuffle as published (kuangliu/pytorch-cifar, the paper's networks): the reshape of
    the permuted view, which returns NCHW whatever the input's memory format."""
    n, c, h, w = x.size()
    return x.view(n, groups, c // groups, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)


def measure_shuffle(modalities, device, steps, rounds):
    """ShuffleNetV2's channels_last training steps with architectures/shufflenet.py's channel shuffle, which keeps
    channels_last, against the published one, whose NCHW output the next convolution converts back (interleaved
    rounds in one process; the two compute the same values)."""
    from architectures import shufflenet
    kept = shufflenet.channel_shuffle
    data, cache = training_data(device), tempfile.mkdtemp(prefix="bench-autotune-")
    rows = []
    for modality in modalities:
        executions = [("fp32 channels_last", Execution(None, torch.channels_last))]
        if device.type == "cpu" and runtime.native_bf16():  # with the depthwise convolutions train.py puts in fp32
            executions.append(("bf16 channels_last + fp32 depthwise", autotuned(
                "shufflenet", modality, device, cache, ("precision=bf16", "memory_format=channels_last"))))
        for name, execution in executions:
            trials = []
            for shuffle in (published_shuffle, kept):
                step = make_step("shufflenet", modality, Lever(name, execution), device, data)

                def run(step=step, shuffle=shuffle):
                    shufflenet.channel_shuffle = shuffle
                    step()
                trials.append((run, []))
                for _ in range(WARMUP_STEPS):
                    run()
            for _ in range(rounds):
                for run, speeds in trials:
                    run()
                    start = time.perf_counter()
                    for _ in range(steps):
                        run()
                    speeds.append(BATCH * steps / (time.perf_counter() - start))
            copies = [copy_milliseconds(run, steps) for run, _ in trials]  # the layout copies, steadier than time
            shufflenet.channel_shuffle = kept
            published, ours = (statistics.median(speeds) for _, speeds in trials)
            rows.append((modality, name, published, ours, *copies))
    print(f"\n### ShuffleNetV2's channel shuffle in channels_last: training images/s (batch {BATCH}, memory {MEMORY}; "
          f"median of {rounds} interleaved rounds of {steps} steps) and aten::copy_ CPU ms per step (torch.profiler)\n")
    print("| modality | lever | published shuffle (returns NCHW) | ours (keeps channels_last) | speed-up | copy_ ms "
          "per step, published | copy_ ms per step, ours |")
    print("|---|---|---|---|---|---|---|")
    for modality, name, published, ours, copy_published, copy_ours in rows:
        print(f"| {modality} | {name} | {published:.1f} | {ours:.1f} | **{ours / published:.3f}x** | "
              f"{copy_published:.1f} | {copy_ours:.1f} |")


def copy_milliseconds(step, steps):
    """CPU milliseconds per step in aten::copy_ (layout and dtype conversions, data copies), by torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(steps):
            step()
    return sum(event.self_cpu_time_total for event in profiler.key_averages() if event.key == "aten::copy_") / (
        1e3 * steps)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", default=",".join(NETWORKS))
    parser.add_argument("--modalities", default="std,encoder_memory")
    parser.add_argument("--sections",
                        default="training,autotune,wholerun,depthwise,shuffle,evaluation,layer,data,parallel")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (the median is reported)")
    parser.add_argument("--all_bf16", action="store_true", help="measure emulated bf16 on every network too")
    parser.add_argument("--batch", type=int, default=BATCH, help="training batch of the training and autotune sections")
    parser.add_argument("--memory", type=int, default=MEMORY, help="memory set of those sections' memory heads")
    args = parser.parse_args()
    if args.batch <= 0 or args.memory <= 0:
        parser.error(f"--batch and --memory must be > 0, got {args.batch} and {args.memory}")
    globals().update(BATCH=args.batch, MEMORY=args.memory)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    machine = runtime.describe_machine(device)
    print(f"Machine: {machine['cpu']} | CPU capability {machine['cpu_capability']} | native bf16 "
          f"{'yes' if machine['native_bf16'] else 'no'} | {machine['threads']} threads | torch {machine['torch']}"
          + (f" | GPU {machine['gpu']}" if "gpu" in machine else "") + f" | {datetime.date.today()}", flush=True)
    sections = args.sections.split(",")
    runtime.keep_freed_memory(device.type == "cpu")  # every section but the paper's own training step uses it
    rows = []
    if "wholerun" in sections:  # first: before this process holds the training section's memory (keep_freed_memory)
        measure_whole_run(device)
    if "training" in sections or "data" in sections:
        rows = measure_training(args.networks.split(","), args.modalities.split(","), device, args.steps,
                                args.rounds, args.all_bf16)
    if "autotune" in sections:
        measure_autotune(args.networks.split(","), args.modalities.split(","), device)
    if "depthwise" in sections:
        measure_depthwise(args.networks.split(","), device)
    if "shuffle" in sections:
        measure_shuffle(args.modalities.split(","), device, args.steps, args.rounds)
    if "evaluation" in sections:
        measure_evaluation(device)
    if "layer" in sections:
        measure_layer()
    if "data" in sections:
        measure_data(device, rows)
    if "parallel" in sections:
        measure_parallel(device, (1, 4, 8, 16) if device.type == "cuda" else (1, 2))


if __name__ == "__main__":
    main()
