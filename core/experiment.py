"""One experiment's folder: the runs of one configuration, written so that processes can share it.

    models/<DATASET>/<MODALITY>/<MODEL>/<TRAIN_EXAMPLES>/
        <r>.pt          the checkpoint of run r (1-based; seed r - 1)
        <r>.json        the record of run r: accuracy, draws, loss, times, real sizes, config
        <r>.state.pt    the resumable state of an unfinished run r (it carries its config)
        <r>.lock        held by the process that trains run r (pid, host)
        tb/run_<r>/     run r's history as TensorBoard scalars (tensorboard: true)
        results.json    rebuilt from the records of runs 1..runs under a lock, after every run
        autoencoders/<r>/, explanation_*.json, counterfactuals_*.json   what the explanation scripts derived

A run trained again (a fresh start, other settings) first moves everything of it, derived files included, into
replaced-<time>/: a finished run is never destroyed.

Every file is written atomically, and each run is trained by one process at a time, so several processes
(``train.py --runs_from=A --runs_to=B``, job arrays) can fill one folder, and the result equals one
sequential job's. The folder holds one configuration: ``check_settings`` compares what is there with the
current config (and refuses a resume with other settings).
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from base.files import FileError, FileLock, atomic_write_json, exclusive

from .checkpoints import safe_torch_load
from .config import Config, ConfigError, setting_differences
from .results import mean_std

RUN_FILE = re.compile(r"^(\d+)\.(pt|json|state\.pt)$")
AUTOENCODERS = "autoencoders"  # <experiment>/autoencoders/<run>/: explanations/autoencoders.py's
MANAGED = ((re.compile(r"^\d+\.json$"), "a run's record"), (re.compile(r"^results\.json$"), "an experiment's results"),
           (re.compile(r"\.pt$"), "a checkpoint"), (re.compile(r"\.lock$"), "a lock file"),
           (re.compile(r"^tb$"), "a folder of TensorBoard curves"))


def refuse_managed_output(path, flag: str) -> Path:
    """``path`` if a script may write its output there; a FileError if it is one of the files the project manages
    (a checkpoint, a run's record, results.json, a lock, an autoencoder, TensorBoard curves): writing over one would
    destroy a finished run."""
    path = Path(path)
    kind = next((kind for pattern, kind in MANAGED if pattern.search(path.name)), None)
    if kind is None and "autoencoders" in path.parts[:-1]:
        kind = "in a folder of autoencoders"
    if kind is not None:
        raise FileError(f"{flag}={path} would overwrite {kind}: refusing to write there; choose another file")
    return path


class ExperimentFolder:
    def __init__(self, path):
        self.path = Path(path)

    # --- paths ------------------------------------------------------------------------------------
    def checkpoint(self, run: int) -> Path:
        return self.path / f"{run}.pt"

    def record_path(self, run: int) -> Path:
        return self.path / f"{run}.json"

    def state(self, run: int) -> Path:
        return self.path / f"{run}.state.pt"

    def tensorboard(self, run: int) -> Path:
        return self.path / "tb" / f"run_{run}"

    def lock(self, run: int) -> FileLock:
        return FileLock(self.path / f"{run}.lock", f"run {run} of {self.path}")

    @property
    def results_path(self) -> Path:
        return self.path / "results.json"

    # --- what is there ----------------------------------------------------------------------------
    def runs_on_disk(self) -> List[int]:
        """Every run number that has a checkpoint, a record or a resumable state here."""
        if not self.path.is_dir():
            return []
        return sorted({int(m.group(1)) for p in self.path.iterdir() if (m := RUN_FILE.match(p.name))})

    def record(self, run: int) -> Optional[Dict[str, Any]]:
        path = self.record_path(run)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except ValueError as error:
            raise ConfigError(f"the run record {path} is not valid JSON ({error}); delete it to train run {run} "
                              f"again") from None

    def records(self) -> Dict[int, Dict[str, Any]]:
        return {run: record for run in self.runs_on_disk() if (record := self.record(run)) is not None}

    def saved_settings(self) -> Dict[str, Tuple[Optional[str], Dict[str, Any], List[Dict[str, Any]]]]:
        """Where a config was saved here -> (modality, config, how its runs computed: the records or states that
        say their precision, memory format and fp32 layers): records, resumable states, results.json."""
        found = {}
        for run, record in self.records().items():
            found[self.record_path(run).name] = (record.get("modality"), record.get("config") or {}, [record])
        for run in self.runs_on_disk():
            if self.state(run).is_file():
                state = safe_torch_load(self.state(run))
                if isinstance(state, dict) and "config" in state:
                    found[self.state(run).name] = (state.get("modality"), state["config"], [state])
        if self.results_path.is_file():
            try:
                results = json.loads(self.results_path.read_text())
            except ValueError as error:
                raise ConfigError(f"{self.results_path} is not valid JSON ({error}); it is rebuilt from the run "
                                  f"records: delete it") from None
            runs = [run for run in results.get("runs") or [] if isinstance(run, dict)]
            found[self.results_path.name] = (results.get("modality"), results.get("config") or {}, runs)
        return found

    def differences(self, config: Config, modality: str) -> Dict[str, List[str]]:
        """File -> the result-shaping settings in which it differs from ``config`` and ``modality`` (a setting
        saved as ``auto`` that the runs resolved to ``config``'s value is none: ``setting_differences``)."""
        out = {}
        for name, (saved_modality, saved_config, computed) in self.saved_settings().items():
            problems = [] if saved_modality in (None, modality) else [f"modality was {saved_modality!r}, now {modality!r}"]
            problems += setting_differences(saved_config, config, computed) if saved_config else []
            if problems:
                out[name] = problems
        return out

    def live_locks(self) -> List[int]:
        return [run for run in self._lock_runs() if self.lock(run).state() == "held"]

    def _lock_runs(self) -> List[int]:
        if not self.path.is_dir():
            return []
        return sorted(int(p.stem) for p in self.path.glob("*.lock") if p.stem.isdigit())

    # --- changes ----------------------------------------------------------------------------------
    def autoencoders(self, run: int) -> Path:
        return self.path / AUTOENCODERS / str(run)

    def derived_files(self) -> Dict[Path, List[int]]:
        """The files the explanation scripts derived from this folder's runs (explanation_accuracy*.json,
        explanation_examples.json, counterfactuals_*.json: a JSON file with a list of models naming their
        checkpoints), each with the runs it describes."""
        found = {}
        for path in sorted(self.path.glob("*.json")) if self.path.is_dir() else []:
            if RUN_FILE.match(path.name) or path.name == "results.json":
                continue
            try:
                models = json.loads(path.read_text()).get("models")
            except (ValueError, AttributeError, UnicodeDecodeError):
                continue  # not a derived file (or a damaged one: its script says so when it reads it)
            if isinstance(models, list):
                found[path] = sorted({int(Path(m["checkpoint"]).stem) for m in models if isinstance(m, dict)
                                      and Path(str(m.get("checkpoint", ""))).stem.isdigit()})
        return found

    def move_aside(self, runs: List[int], why: str) -> Optional[Path]:
        """Move everything of ``runs`` into ``replaced-<time>/`` together, before anything is written: their
        checkpoints, records and resumable states, their TensorBoard curves and autoencoders, results.json, and the
        explanation files that describe any of them (they would describe models that no longer exist). Nothing
        is deleted. Says what it moved in one line."""
        files = [p for p in self.path.iterdir() if (m := RUN_FILE.match(p.name)) and int(m.group(1)) in runs]
        derived = [path for path, described in self.derived_files().items() if set(described) & set(runs)]
        if not files:
            return None
        target = self.path / time.strftime("replaced-%Y%m%d-%H%M%S")
        target.mkdir(exist_ok=True)
        for path in files + derived + ([self.results_path] if self.results_path.is_file() else []):
            path.replace(target / path.name)
        moved_folders = []
        for run in runs:  # their TensorBoard curves (tensorboard: true) and autoencoders go with them
            for source, kind in ((self.tensorboard(run), "tb"), (self.autoencoders(run), AUTOENCODERS)):
                if source.is_dir():
                    (target / kind).mkdir(exist_ok=True)
                    source.replace(target / kind / source.name)
                    moved_folders.append(f"{kind}/{source.name}")
        extra = ", ".join([path.name for path in derived] + moved_folders)
        print(f"Note: {why}; moved the {len(files)} files of runs {runs}" + (f" with {extra}" if extra else "")
              + f" to {target}", flush=True)
        return target

    def write_record(self, run: int, record: Dict[str, Any]) -> None:
        atomic_write_json(record, self.record_path(run))

    def rebuild_results(self, config: Config, modality: str) -> Dict[str, Any]:
        """results.json from the records of runs 1..config.runs, under a lock: concurrent writers each rebuild it
        from every record written before them, so the last one lists every finished run."""
        with exclusive(self.path / ".results.lock"):
            runs = [record for run, record in sorted(self.records().items()) if run <= config.runs]
            summary = results_summary(config, modality, runs)
            atomic_write_json(summary, self.results_path)
        return summary


def results_summary(config: Config, modality: str, runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The content of results.json: what the experiment is, its runs, mean and std of their accuracies."""
    mean, std = mean_std([r["accuracy"] for r in runs])
    return {"dataset_name": config.dataset_name, "modality": modality, "model": config.model,
            "train_examples": config.train_examples, "config": config.to_dict(),
            "runs": [{k: v for k, v in r.items() if k not in ("config", "modality")} for r in runs],
            "mean": mean, "std": std, "complete": len(runs) == config.runs}
