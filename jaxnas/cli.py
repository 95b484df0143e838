"""The `jaxnas` command: argument parsing only; the work lives in the library modules."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from jaxnas import config as config_lib
from jaxnas import errors

_DESCRIPTION = """\
jaxnas: JAX-native neural architecture search.

Configs are Python files returning an ml_collections.ConfigDict from get_config();
override any key with --config.KEY=VALUE (e.g. --config.num_steps=20)."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors list the valid choices and exit with status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n(see '{self.prog} --help')\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxnas", description=_DESCRIPTION,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from jaxnas import __version__

    parser.add_argument("--version", action="version", version=f"jaxnas {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    search = sub.add_parser(
        "search", help="run or resume an architecture search",
        description="Runs a search; re-running on the same --workdir resumes it. Writes "
        "DIR/config.json, DIR/metrics.jsonl, DIR/checkpoints/, DIR/genotype.json and plots.")
    search.add_argument("--config", required=True, help="path to a config file")
    search.add_argument("--workdir", required=True, help="run directory (a local path or gs://bucket/...)")
    dist = search.add_argument_group(
        "multi-process (multi-host) runs",
        "Start one process per host (or per GPU) with the same command; they form one "
        "jax.distributed job whose mesh spans every device. Only process 0 writes logs, "
        "plots and genotype.json; checkpoints are written collectively, so the workdir "
        "must be on a filesystem all hosts share. The flags default to the environment "
        "variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID.")
    dist.add_argument("--coordinator", metavar="HOST:PORT", default=None,
                      help="address of process 0's coordinator service")
    dist.add_argument("--num-processes", type=int, default=None, metavar="N",
                      help="number of processes in the job")
    dist.add_argument("--process-id", type=int, default=None, metavar="I",
                      help="this process's index, 0 .. N-1")
    dist.add_argument("--distributed", action="store_true",
                      help="initialise jax.distributed, detecting the cluster (TPU pod "
                      "slices, SLURM, Open MPI) for any value not given")

    train = sub.add_parser("train", help="retrain a discrete architecture from scratch")
    train.add_argument("--genotype", required=True,
                       help="a known name (DARTS_V1, DARTS_V2), a genotype JSON file (a "
                       "search's genotype.json: DARTS or SPOS/FairNAS chain; or NB201), "
                       "a literal DARTS Genotype(...) string, or a NAS-Bench-201 arch "
                       "string |op~0|+|op~0|op~1|+|...|")
    train.add_argument("--config", required=True, help="path to a config file")
    train.add_argument("--workdir", required=True, help="run directory (a local path or gs://bucket/...)")

    compare = sub.add_parser(
        "compare", help="retrain a searched architecture next to random ones",
        description="Retrains the architecture a search chose and --random uniformly "
        "random architectures of its space with one recipe (a train config), for every "
        "seed, and compares their test accuracy and loss. Each run is a train workdir "
        "DIR/<name>/seed<s> (re-running resumes); the table goes to DIR/comparison.json.")
    compare.add_argument("--genotype", required=True,
                         help="the searched architecture (as for train: a search's "
                         "genotype.json, a known name or a Genotype(...) string)")
    compare.add_argument("--config", required=True, help="a retraining config file")
    compare.add_argument("--workdir", required=True, help="run directory (a local path or gs://bucket/...)")
    compare.add_argument("--random", type=int, default=8, metavar="N",
                         help="random architectures to retrain (default 8)")
    compare.add_argument("--seeds", default="0,1,2",
                         help="comma list of training seeds (default 0,1,2); each "
                         "overrides config.seed")
    compare.add_argument("--random-seed", type=int, default=0,
                         help="seed of the random architectures (default 0)")

    study = sub.add_parser(
        "study", help="measure the hypergradient estimators along a bilevel search",
        description="Runs a bilevel search (any method and estimator) and every "
        "config.study.every steps, on fixed probe batches, compares each listed "
        "estimator with the unrolled and implicit references (cosine, errors, argmax "
        "and <g2', g2> agreement), traces the CG/Neumann solvers, estimates the weight "
        "and alpha Hessians' extreme eigenvalues and times each estimator. Re-running "
        "on the same --workdir resumes. With --from DIR it probes the checkpoints of an "
        "earlier search instead. Writes DIR/study.json and DIR/study_*.png/.pdf.")
    study.add_argument("--config", default=None,
                       help="a study config (a bilevel search config with a study "
                       "section, e.g. experiments/study_digits.py); with --from, only "
                       "its study section is used (default: the earlier run's, else "
                       "the defaults)")
    study.add_argument("--workdir", required=True, help="run directory (a local path or gs://bucket/...)")
    study.add_argument("--from", dest="source", default=None, metavar="DIR",
                       help="probe the saved checkpoints of the search in DIR")

    params = sub.add_parser("params", help="print the exact parameter count of a genotype")
    params.add_argument("--genotype", required=True,
                        help="a known name (DARTS_V1, DARTS_V2), a genotype JSON file (DARTS, "
                        "chain or NB201), a literal DARTS Genotype(...) string or a "
                        "NAS-Bench-201 arch string |op~0|+|op~0|op~1|+|...|")
    params.add_argument("--channels", type=int, required=True, help="initial channels C")
    params.add_argument("--layers", type=int, required=True,
                        help="number of cells (DARTS, at least 3); for an NB201 genotype "
                        "N cells per stage (at least 1)")
    params.add_argument("--num-classes", "--classes", dest="num_classes", type=int,
                        default=10, help="classifier outputs (default 10)")
    params.add_argument("--auxiliary", action="store_true",
                        help="include the auxiliary head (at 2/3 depth; DARTS only)")

    latency = sub.add_parser(
        "latency", help="measure the per-op latency table of a chain space on this device",
        description="Times every choice of every layer of the config's chain space (and "
        "the stem and head) as its own jitted block on this machine's device; writes the "
        "table as JSON (device kind recorded) for hardware-aware searches.")
    latency.add_argument("--config", required=True, help="a chain-space config file")
    latency.add_argument("--out", required=True, help="the JSON file to write")
    latency.add_argument("--batch", type=int, default=1,
                         help="images per timed call (default 1, as MnasNet)")
    latency.add_argument("--repeats", type=int, default=20,
                         help="timed calls per block; the median counts (default 20)")
    latency.add_argument("--clock", choices=("wall", "process"), default="wall",
                         help="wall: elapsed time (default); process: this process's "
                         "CPU time, steadier on a shared CPU (CPU devices only)")

    prepare = sub.add_parser(
        "prepare", help="prepare the embedded digits, or your own images as a data set",
        description="Without --from-*: prepares the embedded digits. With --from-folder "
        "DIR (one sub-folder of PNG/JPEG images per class) or --from-npz FILE (images "
        "uint8 [N, H, W(, C)] and labels [N], or train_/test_ pairs; optional "
        "class_names), checks every image and label, then writes an array_record TFDS "
        "data set DATA_DIR/NAME/1.0.0 that --config.data.dataset=NAME reads.")
    prepare.add_argument("--data-dir", default=None,
                         help="TFDS data_dir (default: $JAXNAS_DATA_DIR or "
                         "~/.cache/jaxnas/tensorflow_datasets)")
    source = prepare.add_mutually_exclusive_group()
    source.add_argument("--from-folder", metavar="DIR", default=None,
                        help="a folder with one sub-folder of images per class")
    source.add_argument("--from-npz", metavar="FILE", default=None,
                        help="an .npz with images and labels (or train_/test_ pairs)")
    prepare.add_argument("--name", default=None,
                         help="data set name (default: the folder or file name in "
                         "lower case)")
    prepare.add_argument("--test-fraction", type=float, default=0.2,
                         help="share of each class put in the test split when the "
                         "source gives no split (default 0.2)")
    prepare.add_argument("--split-seed", type=int, default=0,
                         help="seed of that split (default 0)")

    sub.add_parser("bench", help="step benchmarks (DARTS, SPOS/FairNAS, population "
                   "evaluation): images/s, compile time, memory, FLOP/s (see 'jaxnas bench "
                   "--help')", add_help=False)
    return parser


def _load(path: str, overrides: Sequence[str]):
    config = config_lib.load_config(path)
    config_lib.apply_overrides(config, overrides)
    return config


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("jaxnas").setLevel(logging.INFO)
    try:  # orbax and jax log through absl at INFO; keep their chatter out of the way
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)
    except ImportError:
        pass
    if argv and argv[0] == "bench":
        from jaxnas.bench import runner

        return runner.main(argv[1:])
    from jaxnas import compilation  # persistent XLA cache on, compile banners off

    compilation.setup()
    try:
        rest, overrides = config_lib.split_config_args(argv)
    except errors.ConfigError as e:
        print(f"jaxnas: error: {e}", file=sys.stderr)
        return 2
    parser = _build_parser()
    args = parser.parse_args(rest)
    if overrides and args.command not in ("search", "train", "compare", "study",
                                          "latency"):
        parser.error("--config.* overrides apply to search, train, compare, study and "
                     "latency, "
                     f"not {args.command}")
    try:
        if args.command == "search":
            config = _load(args.config, overrides)
            from jaxnas import parallel, search

            search.validate_config(config)
            parallel.initialize_distributed(parallel.distributed_settings(
                coordinator=args.coordinator, num_processes=args.num_processes,
                process_id=args.process_id, auto=args.distributed))
            _quiet_unless_lead()
            search.run(config, args.workdir)
        elif args.command == "train":
            config = _load(args.config, overrides)
            from jaxnas import spaces, train

            genotype = spaces.from_spec(args.genotype)
            train.validate_config(config, spaces.space_of(genotype).name)
            train.run(config, genotype, args.workdir)
        elif args.command == "compare":
            from jaxnas import compare, spaces

            seeds = compare.parse_seeds(args.seeds)
            if args.random < 1:
                parser.error(f"--random must be at least 1 (got {args.random})")
            if args.random_seed < 0:
                parser.error(f"--random-seed must be non-negative (got {args.random_seed})")
            config = _load(args.config, overrides)
            genotype = spaces.from_spec(args.genotype)
            from jaxnas import train

            train.validate_config(config, spaces.space_of(genotype).name)
            summary = compare.run(config, genotype, args.workdir, num_random=args.random,
                                  seeds=seeds, random_seed=args.random_seed)
            print(compare.format_table(summary))
        elif args.command == "study":
            from jaxnas.study import run as study_run

            if args.source is None:
                if args.config is None:
                    parser.error("study needs --config (or --from DIR to probe an "
                                 "earlier search)")
                study_run.run(_load(args.config, overrides), args.workdir)
            else:
                section = None
                if args.config is not None:
                    section = _load(args.config, overrides).get("study")
                study_run.run_from(args.source, args.workdir, section)
        elif args.command == "params":
            from jaxnas import spaces

            arch = spaces.from_spec(args.genotype)
            space = spaces.space_of(arch)
            _check_params_args(space.name, args)
            extra = {"auxiliary": True} if args.auxiliary else {}
            print(space.num_params(arch, channels=args.channels, layers=args.layers,
                                   num_classes=args.num_classes, **extra))
        elif args.command == "latency":
            from jaxnas.runners import latency as latency_runner

            latency_runner.run(_load(args.config, overrides), args.out,
                               batch=args.batch, repeats=args.repeats,
                               clock=args.clock)
        elif args.command == "prepare":
            from jaxnas import data

            if args.from_folder is None and args.from_npz is None:
                if args.name is not None:
                    parser.error("--name applies to --from-folder or --from-npz")
                print(data.prepare_digits(args.data_dir))
            else:
                _prepare_own(args)
    except (errors.ConfigError, ValueError, FileNotFoundError, FileExistsError,
            NotADirectoryError, IsADirectoryError) as e:
        print(f"jaxnas {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (errors.NonFiniteError, errors.DeviceOutOfMemoryError) as e:
        print(f"jaxnas {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print("jaxnas: interrupted", file=sys.stderr)
        return 128 + int(getattr(e, "signum", 2))  # 130 for SIGINT, 143 for SIGTERM
    return 0


def _check_params_args(space: str, args) -> None:
    """Refuses sizes no network of ``space`` has, before any count divides by them
    (a ValueError: main reports it and exits with status 2)."""
    if args.num_classes < 1:
        raise ValueError(f"--num-classes/--classes must be at least 1 (got "
                         f"{args.num_classes})")
    if args.channels < 1:
        raise ValueError(f"--channels must be positive (got {args.channels})")
    # DARTS places reduction cells at 1/3 and 2/3 of the depth; NB201's --layers is N
    # cells per stage, so one suffices.
    least = 3 if space == "darts" else 1
    if args.layers < least:
        what = "cells per stage" if space == "nb201" else "cells"
        raise ValueError(f"--layers must be at least {least} for a {space} genotype "
                         f"({what}; got {args.layers})")


def _prepare_own(args) -> None:
    """`prepare --from-folder/--from-npz`: check everything, then write."""
    from jaxnas.data import own

    source = args.from_folder or args.from_npz
    name = args.name or own.default_name(source)
    own.target(name, args.data_dir)  # refuse a bad or taken name before reading
    if args.split_seed < 0:
        raise ValueError(f"--split-seed must be non-negative (got {args.split_seed})")
    read = own.read_folder if args.from_folder else own.read_npz
    dataset = read(source, test_fraction=args.test_fraction, seed=args.split_seed)
    path = own.write(dataset, name, args.data_dir)
    sizes = ", ".join(f"{s} {len(y)}" for s, (_, y) in dataset.splits.items())
    print(path)
    print(f"{name}: {len(dataset.class_names)} classes, images "
          f"{'x'.join(map(str, dataset.image_shape))} uint8, {sizes}. Search it with "
          f"--config.data.dataset={name}"
          + (f" --config.data.data_dir={own.resolve_data_dir(args.data_dir)}"
             if args.data_dir else ""))


def _quiet_unless_lead() -> None:
    """In a multi-process run only process 0 reports progress at INFO."""
    import jax

    if jax.process_index() != 0:
        logging.getLogger("jaxnas").setLevel(logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
