"""The end-to-end governance scenario of ``controlplane demo``, driven over HTTP only.

Every actor is a principal with its own bearer token and, where it signs, its own Ed25519 key
generated on "its machine" (a folder of the demo directory); they use the client code the CLI
and the dashboard use (:class:`ApiClient`, :mod:`controlplane.client.signoff`, the contract
statement builder and signer, :class:`RunnerClient` and the reference :class:`Runner`). Nothing
goes around governance: the rules that decide are the ones in ``policies/promotion.yaml``, and
every refusal shown is a real one, recorded in the ledger.

The story:

1. people and roles; sign-off keys for those who sign;
2. a rubric and two dataset splits registered and approved (signed sign-offs);
3. three data contracts (reward model, DPO, evaluation) signed by the data owner;
4. a base model built on the engineer's machine; a reward model and a DPO policy trained for
   real (TRL on CPU) by a runner that claims each job under a contract, while a second runner
   presenting a tampered copy of a contract is refused;
5. the policy promoted registered -> candidate -> staging (offline evaluation evidence) ->
   canary (two approvers, a traffic share) -> production (an approver and a compliance
   reviewer, neither the requester nor the creator, online evaluation evidence), with MLflow's
   ``production`` alias following;
6. a second policy version taken the same way to production, then rolled back with a reason
   (the alias follows again);
7. the whole ledger verified client-side, as ``controlplane verify`` does.

The interface (``cli/demo_cmds.py``) hosts the API and draws the narration; this module only
decides what happens and reports it through a :class:`Narrator`.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any, Protocol
from urllib.parse import quote

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controlplane import clock
from controlplane.client import signoff
from controlplane.client.api import ApiClient, ApiError
from controlplane.client.verify import StateFile, verify_server
from controlplane.config import DEFAULT_PROJECT, Settings
from controlplane.contracts import statement as st
from controlplane.crypto.keys import public_key_b64, save_private_key
from controlplane.demo.workspace import DemoDir, write_private
from controlplane.demo_data import demo_data
from controlplane.errors import ControlPlaneError
from controlplane.ledger.canonical import canonical_json
from controlplane.registry.digests import digest_path
from controlplane.runners.runner import Outcome, Runner, RunnerConfig
from controlplane.runners.sdk import ContractRefused, RunnerClient

PROJECT = DEFAULT_PROJECT
TRAINING_MODULES = ("torch", "transformers", "trl", "tokenizers", "accelerate", "datasets")
INSTALL_HINT = (
    "the demo trains real models and needs the training extra: "
    "pip install 'torch==2.13.0' && pip install -e '.[train]' (or run `make run`)"
)

RUBRIC = "helpfulness"
TRAIN = "prefs-train"
HELD_OUT = "prefs-eval"
BASE = "demo-base"
REWARD_MODEL = "helpful-rm"
POLICY = "helpful-dpo"
CANARY_SHARE = 0.1
CONTRACT_DAYS = 90


class DemoFailed(ControlPlaneError):
    """The scenario could not go on (a job failed, a rule refused what it should allow...)."""

    status = 500
    title = "Demo failed"
    code = "demo-failed"


def missing_training_libraries() -> list[str]:
    """The training libraries (the ``[train]`` extra) that cannot be imported here."""
    return [name for name in TRAINING_MODULES if importlib.util.find_spec(name) is None]


# -- what the scenario reports -----------------------------------------------------------------


@dataclass
class Step:
    """One numbered step: who did what, what came of it, and which ledger entries it added."""

    number: int
    actor: str
    text: str
    result: str = ""
    first_seq: int | None = None
    last_seq: int | None = None
    actions: list[str] = field(default_factory=list)
    start: int = 0
    """The ledger size when the step began (its first entry, if it adds any)."""

    @property
    def seqs(self) -> str:
        if self.first_seq is None or self.last_seq is None:
            return "no ledger entry"
        if self.first_seq == self.last_seq:
            return f"seq {self.first_seq}"
        return f"seq {self.first_seq}-{self.last_seq}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("start")
        return {**data, "seqs": self.seqs}


class Narrator(Protocol):
    """Where the scenario tells what happens (the CLI prints it)."""

    def begin(self, step: Step) -> None:
        """A step starts: ``step.number``, ``step.actor`` and ``step.text`` are set."""

    def end(self, step: Step) -> None:
        """The step is done: ``result``, the seq range and the actions are set."""

    def progress(self, label: str, fraction: float, message: str) -> None:
        """Training progress (fraction in [0, 1])."""

    def progress_done(self) -> None:
        """The training that reported progress has ended."""


@dataclass
class Person:
    """One of the demo's people: a principal, a role, a token, maybe a sign-off key."""

    id: str
    role: str
    display_name: str
    signs: bool = False
    kind: str = "user"
    token: str = ""
    key: Ed25519PrivateKey | None = None
    key_id: str | None = None
    api: ApiClient | None = None

    @property
    def label(self) -> str:
        return f"{self.id} ({self.role})"

    @property
    def client(self) -> ApiClient:
        assert self.api is not None, f"{self.id} has no client yet"
        return self.api

    @property
    def private_key(self) -> Ed25519PrivateKey:
        assert self.key is not None, f"{self.id} has no sign-off key"
        return self.key


def cast() -> dict[str, Person]:
    people = [
        Person("erin", "engineer", "Erin, ML engineer"),
        Person("dora", "data_owner", "Dora, owner of the preference data", signs=True),
        Person("alice", "approver", "Alice, approver", signs=True),
        Person("bob", "approver", "Bob, approver", signs=True),
        Person("carol", "compliance_reviewer", "Carol, compliance reviewer", signs=True),
        Person("gpu-runner-1", "runner", "Training runner 1", kind="runner"),
        Person("rogue-runner", "runner", "A runner no contract names", kind="runner"),
    ]
    return {p.id: p for p in people}


class _TrainingEvents:
    """Runner events turned into the narrator's progress indication."""

    def __init__(self, narrator: Narrator, label: str) -> None:
        self.narrator = narrator
        self.label = label

    def idle(self) -> None:
        pass

    def claimed(self, job: Mapping[str, Any]) -> None:
        self.narrator.progress(self.label, 0.0, f"claimed job {job['id']}")

    def step(self, job: Mapping[str, Any], fraction: float, message: str) -> None:
        self.narrator.progress(self.label, fraction, message)

    def done(self, outcome: Outcome) -> None:
        self.narrator.progress_done()

    def notice(self, message: str) -> None:
        pass


# -- the scenario ------------------------------------------------------------------------------


class Scenario:
    """The demo's story against one API at ``url``, as the bootstrap admin first."""

    def __init__(
        self,
        url: str,
        admin_token: str,
        workspace: DemoDir,
        settings: Settings,
        narrator: Narrator,
        serve_url: str,
    ) -> None:
        self.url = url
        self.workspace = workspace
        self.settings = settings
        self.narrator = narrator
        self.serve_url = serve_url
        self.admin = ApiClient(url, admin_token)
        self.people = cast()
        self.steps: list[Step] = []
        self.facts: dict[str, Any] = {}
        self.contracts: dict[str, dict[str, Any]] = {}
        self.refs: dict[str, str] = {}
        self._started = time.monotonic()

    def close(self) -> None:
        self.admin.close()
        for person in self.people.values():
            if person.api is not None:
                person.api.close()

    # -- plumbing ------------------------------------------------------------------------------

    def _size(self) -> int:
        return int(self.admin.get("/v1/ledger/checkpoint")["tree_size"])

    @contextmanager
    def step(self, actor: str, text: str) -> Iterator[Step]:
        """One numbered step; the ledger entries appended meanwhile are its seq range."""
        record = Step(len(self.steps) + 1, actor, text)
        self.steps.append(record)
        self.narrator.begin(record)
        before = record.start = self._size()
        yield record
        after = self._size()
        if after > before:
            record.first_seq, record.last_seq = before, after - 1
            entries = self.admin.get("/v1/ledger/entries", start=before, limit=after - before)
            record.actions = [e["action"] for e in entries["data"]]
        self.narrator.end(record)

    def _entries(self, step: Step, action: str) -> list[dict[str, Any]]:
        """The ``action`` entries appended since ``step`` began."""
        size = self._size()
        if size <= step.start:
            return []
        data = self.admin.get("/v1/ledger/entries", start=step.start, limit=size - step.start)
        return [e for e in data["data"] if e["action"] == action]

    def _artifact(self, kind: str, name: str) -> str:
        return "/v1/projects/{}/artifacts/{}/{}".format(
            *(quote(part, safe="") for part in (PROJECT, kind, name))
        )

    def _version(self, ref: str) -> dict[str, Any]:
        kind, _, rest = ref.partition("/")
        name, _, version = rest.partition("@")
        return dict(self.admin.get(self._artifact(kind, name) + f"/versions/{version}"))

    # -- the story -----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Play the whole story; the machine-readable summary."""
        self.opened()
        self.create_people()
        self.generate_keys()
        self.register_data()
        self.approve_data()
        self.sign_contracts()
        self.build_base_model()
        self.train_reward_model()
        self.forged_contract()
        first = self.train_policy(1, {}, "from the base model")
        self.promote_first(first)
        second = self.train_policy(2, {"beta": 0.2, "seed": 1}, "a second run with beta 0.2")
        self.promote_second(second)
        self.roll_back()
        self.verify()
        return self.summary()

    def opened(self) -> None:
        """The entries ``init`` wrote before the API started: step 1 of the record."""
        size = self._size()
        origin = self.admin.get("/v1/ledger/keys")["origin"]
        self.facts["origin"] = origin
        entries = self.admin.get("/v1/ledger/entries", start=0, limit=size)["data"]
        record = Step(
            1,
            "admin",
            "initialise the data directory and start the API",
            result=f"ledger {origin}: checkpoint signing key, authorization policy, promotion "
            "rules, the bootstrap admin",
            first_seq=0,
            last_seq=size - 1,
            actions=[e["action"] for e in entries],
        )
        self.steps.append(record)
        self.narrator.begin(record)
        self.narrator.end(record)

    def create_people(self) -> None:
        people = self.people.values()
        listing = ", ".join(p.label for p in people)
        with self.step("admin", f"create the principals of project {PROJECT}: {listing}") as s:
            tokens: dict[str, Any] = {}
            for person in people:
                base = f"/v1/principals/{quote(person.id, safe='')}"
                self.admin.post(
                    "/v1/principals",
                    {"id": person.id, "kind": person.kind, "display_name": person.display_name},
                )
                self.admin.post(base + "/roles", {"role": person.role, "project": PROJECT})
                person.token = self.admin.post(base + "/tokens", {"name": "demo"})["token"]
                person.api = ApiClient(self.url, person.token)
                tokens[person.id] = {
                    "role": f"{person.role}@{PROJECT}",
                    "token": person.token,
                    "keys_dir": str(self.workspace.person_keys(person.id)),
                    "env_file": str(self.workspace.env_dir / f"{person.id}.env"),
                }
                self._write_env(person)
            write_private(self.workspace.tokens_file, json.dumps(tokens, indent=2) + "\n")
            s.result = f"one bearer token each (shown once), kept in {self.workspace.tokens_file}"

    def _write_env(self, person: Person) -> None:
        """A file to ``source`` to act as ``person`` with the CLI against ``demo --serve``."""
        lines = [
            f"# act as {person.label}: source this file, then run controlplane commands",
            f"export CONTROLPLANE_URL={self.serve_url}",
            f"export CONTROLPLANE_TOKEN={person.token}",
            f"export CONTROLPLANE_KEYS_DIR={self.workspace.person_keys(person.id)}",
            f"export XDG_STATE_HOME={self.workspace.home(person.id) / 'state'}",
        ]
        write_private(self.workspace.env_dir / f"{person.id}.env", "\n".join(lines) + "\n")

    def generate_keys(self) -> None:
        signers = [p for p in self.people.values() if p.signs]
        names = ", ".join(p.id for p in signers)
        text = "each generate an Ed25519 sign-off key and register its public half"
        with self.step(names, text) as s:
            for person in signers:
                private = Ed25519PrivateKey.generate()
                data = person.client.post(
                    "/v1/keys",
                    {"public_key": public_key_b64(private.public_key()), "name": "demo-laptop"},
                )
                save_private_key(
                    private, self.workspace.person_keys(person.id) / f"{data['key_id']}.pem"
                )
                person.key, person.key_id = private, str(data["key_id"])
            s.result = f"private keys stay on their machines: {self.workspace.keys_dir}/<person>"

    def register_data(self) -> None:
        erin = self.people["erin"]
        data = demo_data()
        with self.step(erin.label, "register the labelling rubric and both dataset splits") as s:
            shown = []
            for kind, name, path in (
                ("rubric", RUBRIC, data.rubric),
                ("dataset", TRAIN, data.train),
                ("dataset", HELD_OUT, data.eval),
            ):
                version = erin.client.post(
                    self._artifact(kind, name) + "/versions",
                    {
                        "content": path.read_text(encoding="utf-8"),
                        "filename": path.name,
                        "uri": path.resolve().as_uri(),
                        "metadata": {"source": "controlplane demo data (synthetic)"},
                    },
                )
                self.refs[name] = version["ref"]
                shown.append(_describe_data(version))
            s.result = "; ".join(shown)

    def approve_data(self) -> None:
        erin, alice = self.people["erin"], self.people["alice"]
        refs = [self.refs[RUBRIC], self.refs[TRAIN], self.refs[HELD_OUT]]
        with self.step(
            f"{erin.id} asks, {alice.id} signs", "approval of the rubric and the data"
        ) as s:
            for ref in refs:
                self._promote(ref, "approved", [alice], "reviewed against rubric helpfulness@1")
            s.result = ", ".join(refs) + ": approved (one signed sign-off each)"

    def sign_contracts(self) -> None:
        dora, runner = self.people["dora"], self.people["gpu-runner-1"]
        home = self.workspace.home(dora.id) / "contracts"
        home.mkdir(parents=True, exist_ok=True)
        plan = {
            "reward_model": [self.refs[TRAIN], self.refs[RUBRIC]],
            "dpo": [self.refs[TRAIN], self.refs[RUBRIC]],
            "evaluation": [self.refs[HELD_OUT], self.refs[RUBRIC]],
        }
        with self.step(
            dora.label,
            f"write, sign and register data contracts for {runner.id}: " + ", ".join(plan),
        ) as s:
            ids = []
            for purpose, refs in plan.items():
                subjects = [self._subject(ref) for ref in refs]
                now = clock.now()
                statement = st.build(
                    contract_id=f"demo-{purpose.replace('_', '-')}-{uuid.uuid4().hex[:8]}",
                    project=PROJECT,
                    owner=dora.id,
                    purpose=purpose,
                    subjects=subjects,
                    consumers=[runner.id],
                    rubric=subjects[-1].full_name,
                    expires=now + timedelta(days=CONTRACT_DAYS),
                    created_at=now,
                    name=f"Demo preference data for {purpose}",
                    usage=f"{purpose} training in the controlplane demo",
                    terms="Synthetic data; annotator identities stay pseudonymised.",
                )
                envelope = st.sign(statement, dora.private_key)
                (home / f"{statement.id}.contract.json").write_text(
                    json.dumps(statement.to_dict(), indent=2) + "\n"
                )
                (home / f"{statement.id}.dsse.json").write_text(
                    json.dumps(envelope, indent=2) + "\n"
                )
                registered = dora.client.post(
                    f"/v1/projects/{PROJECT}/contracts", {"envelope": envelope}
                )
                self.contracts[purpose] = envelope
                self.facts.setdefault("contracts", {})[purpose] = registered["id"]
                ids.append(registered["id"])
            s.result = f"{', '.join(ids)}: {CONTRACT_DAYS} days, envelopes in {home}"

    def _subject(self, ref: str) -> st.Subject:
        version = self._version(ref)
        kind, _, rest = ref.partition("/")
        name = rest.partition("@")[0]
        digest = str(version["digest"]).split(":", 1)[1]
        return st.Subject(PROJECT, kind, name, int(version["version"]), digest)

    def build_base_model(self) -> None:
        from controlplane.runners.trainers import base_model_texts, build_base_model

        erin = self.people["erin"]
        target = self.workspace.home(erin.id) / "base-model"
        with self.step(erin.label, "build a tiny base model on her machine and register it") as s:
            build_base_model(
                target,
                base_model_texts([demo_data().train]),
                seed=0,
                progress=lambda f, m: self.narrator.progress("base model", f, m),
            )
            self.narrator.progress_done()
            version = erin.client.post(
                self._artifact("policy", BASE) + "/versions",
                {
                    "digest": digest_path(target),
                    "uri": target.resolve().as_uri(),
                    "metadata": {"architecture": "GPT-2, 2 layers, 64 wide, own BPE tokenizer"},
                    "lineage": [{"relation": "trained_on", "ref": self.refs[TRAIN]}],
                },
            )
            self.refs[BASE] = version["ref"]
            # its bytes on the control plane too, for runners on other machines (`job upload`)
            RunnerClient(erin.client).upload(PROJECT, target)
            mlflow = self._mlflow_synced()
            mirrored = "mirrored to MLflow" if mlflow else "MLflow not reachable: mirror pending"
            s.result = f"{version['ref']} trained_on {self.refs[TRAIN]}, uploaded; {mirrored}"

    # -- training ------------------------------------------------------------------------------

    def _runner(self, person: Person, contracts: list[Any], label: str) -> Runner:
        config = RunnerConfig(
            projects=[PROJECT],
            contracts=contracts,
            work_dir=(self.settings.data_dir / "runner").resolve(),
            poll_interval=0.2,
            mlflow_tracking_uri=self.settings.resolved_mlflow_tracking_uri,
        )
        return Runner(RunnerClient(person.client), config, _TrainingEvents(self.narrator, label))

    def _queue(self, trainer: str, output: str, body: dict[str, Any]) -> dict[str, Any]:
        """Erin queues a job; every input is pinned by its digest in ``job.queued``."""
        return dict(
            self.people["erin"].client.post(
                f"/v1/projects/{PROJECT}/jobs",
                {"trainer": trainer, "output_name": output, **body},
            )
        )

    def _work(self, job_id: int, label: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """gpu-runner-1 polls with its contracts, claims job ``job_id``, trains, reports."""
        runner = self.people["gpu-runner-1"]
        contracts = [self.contracts[p] for p in ("reward_model", "dpo", "evaluation")]
        outcomes = self._runner(runner, contracts, label).run(once=True, max_idle=60)
        if not outcomes:
            raise DemoFailed(f"{runner.id} took no job within a minute (job {job_id} waits)")
        outcome = outcomes[-1]
        if outcome.state != "succeeded" or outcome.job_id != job_id:
            raise DemoFailed(f"job {outcome.job_id} {outcome.state}: {outcome.detail}")
        job = self.people["erin"].client.get(f"/v1/jobs/{job_id}")
        return job, self._version(job["result"]["output"]["ref"])

    def _train(
        self, label: str, trainer: str, output: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        return self._work(self._queue(trainer, output, body)["id"], label)

    def train_reward_model(self) -> None:
        runner = self.people["gpu-runner-1"]
        with self.step(
            f"erin queues, {runner.id} trains",
            "a reward model on prefs-train (TRL RewardTrainer, CPU)",
        ) as s:
            job, version = self._train(
                "reward model",
                "reward_model",
                REWARD_MODEL,
                {
                    "datasets": [self.refs[TRAIN]],
                    "rubric": self.refs[RUBRIC],
                    "base_model": self.refs[BASE],
                },
            )
            self.refs[REWARD_MODEL] = version["ref"]
            metrics = job["result"]["metrics"]
            s.result = (
                f"job {job['id']} under contract {job['contract_id']} -> {version['ref']}: "
                f"pairwise accuracy {metrics.get('pairwise_accuracy', 0):.2f}"
            )

    def forged_contract(self) -> None:
        """A runner no contract names edits one to add itself: the signature no longer holds."""
        rogue = self.people["rogue-runner"]
        real = self.contracts["dpo"]
        statement = json.loads(base64.b64decode(real["payload"]))
        statement["predicate"]["consumers"]["principals"].append(rogue.id)
        forged = {**real, "payload": base64.b64encode(canonical_json(statement)).decode()}
        path = self.workspace.home(rogue.id) / "forged-contract.dsse.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(forged, indent=2) + "\n")
        with self.step(
            f"erin queues, {rogue.id} claims",
            f"a DPO job; {rogue.id}, named by no contract, presents the DPO contract edited "
            "to list itself as a consumer",
        ) as s:
            job = self._queue("dpo", POLICY, self._dpo_inputs({}))
            try:
                self._runner(rogue, [forged], "forged").run(once=True, max_idle=10)
            except ContractRefused as exc:
                refusal = str(exc)
            else:
                raise DemoFailed("the tampered contract was not refused")
            rejected = self._entries(s, "contract.rejected")
            if not rejected:
                raise DemoFailed("the refusal of the tampered contract was not ledgered")
            entry = rejected[-1]
            self.facts["forged_contract"] = {
                "refused": True,
                "seq": entry["seq"],
                "runner": rogue.id,
                "job_id": job["id"],
                "reason": refusal,
                "code": entry["payload"].get("code"),
                "envelope_file": str(path),
            }
            s.result = (
                f"refused with 403, recorded as contract.rejected at seq {entry['seq']} "
                f"({entry['payload'].get('code')}): {entry['payload'].get('reason')}; "
                f"job {job['id']} stays queued"
            )

    def train_policy(self, number: int, hyper: dict[str, Any], what: str) -> dict[str, Any]:
        runner = self.people["gpu-runner-1"]
        with self.step(
            f"{runner.id} trains", f"policy {number}, {what}, with TRL's DPOTrainer"
        ) as s:
            if number == 1:  # queued in the previous step, still waiting for a valid contract
                job_id = int(self.facts["forged_contract"]["job_id"])
            else:
                job_id = self._queue("dpo", POLICY, self._dpo_inputs(hyper))["id"]
            job, version = self._work(job_id, "DPO policy")
            self.refs[f"policy_{number}"] = version["ref"]
            metrics = job["result"]["metrics"]
            s.result = (
                f"job {job['id']} under contract {job['contract_id']} -> {version['ref']}: "
                f"preference accuracy {metrics.get('rewards/accuracies', 0):.2f} "
                f"(created by {version['created_by']})"
            )
        return version

    def _dpo_inputs(self, hyper: dict[str, Any]) -> dict[str, Any]:
        return {
            "datasets": [self.refs[TRAIN]],
            "rubric": self.refs[RUBRIC],
            "base_model": self.refs[BASE],
            "hyperparameters": hyper,
        }

    def _evaluate(self, policy_ref: str, mode: str) -> tuple[dict[str, Any], dict[str, Any]]:
        return self._train(
            f"{mode} evaluation",
            "evaluation",
            f"{POLICY}-{mode}",
            {
                "datasets": [self.refs[HELD_OUT]],
                "policy": policy_ref,
                "reward_model": self.refs[REWARD_MODEL],
                "base_model": self.refs[BASE],
                "hyperparameters": {"mode": mode},
            },
        )

    # -- promotion -----------------------------------------------------------------------------

    def _promote(
        self,
        ref: str,
        target: str,
        signers: list[Person],
        justification: str,
        traffic_share: float | None = None,
    ) -> dict[str, Any]:
        """Erin requests, each signer signs an approval; the request must end approved."""
        kind, _, rest = ref.partition("/")
        name, _, version = rest.partition("@")
        request = self.people["erin"].client.post(
            f"/v1/projects/{PROJECT}/requests",
            {
                "kind": kind,
                "name": name,
                "version": int(version),
                "target_stage": target,
                "justification": justification,
                "traffic_share": traffic_share,
            },
        )
        for signer in signers:
            request = signoff.sign_off(
                signer.client,
                request["id"],
                "approve",
                f"{signer.role}: {justification}",
                signer.private_key,
                signer=signer.id,
            )
        if request["state"] != "approved":
            raise DemoFailed(f"request {request['id']} for {ref} -> {target} is {request['state']}")
        return request

    def _evaluation_line(self, evaluation: dict[str, Any]) -> str:
        metrics = evaluation["metadata"]["metrics"]
        return (
            f"{evaluation['ref']} ({evaluation['metadata']['mode']}): win rate "
            f"{metrics['win_rate']:.2f}, safety violations {metrics['safety_violation_rate']:.2f}"
        )

    def promote_first(self, policy: dict[str, Any]) -> None:
        ref = policy["ref"]
        erin, alice, bob, carol = (self.people[p] for p in ("erin", "alice", "bob", "carol"))
        with self.step(f"erin asks, {alice.id} signs", f"{ref}: registered -> candidate") as s:
            self._promote(ref, "candidate", [alice], "first DPO policy on approved data")
            s.result = f"{ref} is a candidate"
        with self.step(erin.label, f"ask for {ref} -> staging before any evaluation exists") as s:
            try:
                self._promote(ref, "staging", [alice], "ready for staging")
            except ApiError as exc:
                s.result = f"refused by the rules ({exc.status}): {exc.detail}"
                recorded = self._entries(s, "promotion.refused")
                self.facts["refused_without_evidence"] = {
                    "detail": exc.detail,
                    "seq": recorded[-1]["seq"] if recorded else None,
                }
            else:
                raise DemoFailed("staging without evaluation evidence was allowed")
        with self.step(
            "gpu-runner-1 evaluates, alice signs",
            f"offline evaluation of {ref} on held-out prompts, then staging",
        ) as s:
            _, evaluation = self._evaluate(ref, "offline")
            self._promote(ref, "staging", [alice], "offline evaluation meets the thresholds")
            s.result = f"{self._evaluation_line(evaluation)}; {ref} is in staging"
        with self.step(
            f"erin asks, {alice.id} and {bob.id} sign",
            f"{ref}: staging -> canary with {CANARY_SHARE:.0%} of traffic",
        ) as s:
            self._promote(ref, "canary", [alice, bob], "canary on a slice of traffic", CANARY_SHARE)
            s.result = f"{ref} is the canary; MLflow alias canary -> {self._alias_line('canary')}"
        with self.step(
            f"gpu-runner-1 evaluates; alice and {carol.id} sign",
            f"online evaluation of {ref} (its own generated answers), then production",
        ) as s:
            _, evaluation = self._evaluate(ref, "online")
            request = self._promote(
                ref, "production", [alice, carol], "canary and online evaluation are good"
            )
            self.facts["first_production_request"] = request["id"]
            s.result = (
                f"{self._evaluation_line(evaluation)}; {ref} is in production "
                f"(request {request['id']}: 2 of 2 incl. a compliance_reviewer; the requester "
                f"erin and the creator {policy['created_by']} may not sign); "
                f"MLflow alias production -> {self._alias_line('production')}"
            )
        self.facts["production_after_first"] = self._alias("production")

    def promote_second(self, policy: dict[str, Any]) -> None:
        ref = policy["ref"]
        alice, bob, carol = (self.people[p] for p in ("alice", "bob", "carol"))
        with self.step(
            "gpu-runner-1 evaluates; alice, bob and carol sign",
            f"{ref} the same way: candidate, staging, canary, production",
        ) as s:
            self._promote(ref, "candidate", [alice], "second DPO policy")
            _, offline = self._evaluate(ref, "offline")
            self._promote(ref, "staging", [alice], "offline evaluation meets the thresholds")
            self._promote(ref, "canary", [alice, bob], "canary", CANARY_SHARE)
            _, online = self._evaluate(ref, "online")
            self._promote(ref, "production", [alice, carol], "canary and online evaluation good")
            retired = self.refs["policy_1"]
            s.result = (
                f"{self._evaluation_line(offline)}; {self._evaluation_line(online)}; "
                f"{ref} in production, {retired} retired; MLflow production -> "
                f"{self._alias_line('production')}"
            )
        self.facts["production_after_second"] = self._alias("production")

    def roll_back(self) -> None:
        alice = self.people["alice"]
        reason = "rollback drill: restore the previous production policy"
        with self.step(alice.label, f"roll policy/{POLICY} back (reason: {reason!r})") as s:
            data = alice.client.post(
                self._artifact("policy", POLICY) + "/rollback", {"reason": reason}
            )
            alias = self._alias("production")
            s.result = (
                f"production is version {data['to_version']} again, version "
                f"{data['from_version']} retired; MLflow production -> "
                f"{self._alias_text(alias)}"
            )
            entries = self._entries(s, "promotion.rolled_back")
            self.facts["rollback"] = {
                **data,
                "by": alice.id,
                "seq": entries[-1]["seq"] if entries else None,
                "mlflow_production": alias,
            }

    def verify(self) -> None:
        carol = self.people["carol"]
        with self.step(
            carol.label, "verify the whole ledger client-side (controlplane verify)"
        ) as s:
            state = StateFile(
                self.workspace.home(carol.id) / "state" / "controlplane" / "verify-state.json"
            )
            report = verify_server(carol.client, state)
            self.facts["verify"] = {"source": self.url, **report.to_dict()}
            if not report.ok:
                s.result = "FAILED: " + "; ".join(report.problems[:3])
                raise DemoFailed("verification failed: " + "; ".join(report.problems[:5]))
            s.result = (
                f"OK: {report.size} entries, root {report.root_hash[:16]}..., "
                f"{report.checkpoints_verified} signed checkpoints, {report.signoffs_verified} "
                f"sign-off signatures and {report.contracts_verified} data contracts checked"
            )

    # -- MLflow ----------------------------------------------------------------------------------

    def _mlflow_synced(self, timeout: float = 60.0) -> bool:
        """Wait until the mirror has caught up with the ledger (it runs after each commit)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.admin.get("/v1/integrations/mlflow/status")
            if status.get("reachable") is False:
                return False
            if (
                not status.get("queued")
                and not status.get("syncing")
                and status.get("behind_artifacts") == 0
            ):
                return True
            time.sleep(0.2)
        return False

    def _alias(self, alias: str) -> dict[str, Any] | None:
        """What MLflow's ``alias`` of the policy points at, read from MLflow itself."""
        if not self._mlflow_synced():
            return None
        from controlplane.integrations.mlflow.client import make_client
        from controlplane.integrations.mlflow.state import ArtifactKey, model_name

        name = model_name(ArtifactKey(PROJECT, "policy", POLICY))
        try:
            found = make_client(self.settings).get_model_version_by_alias(name, alias)
        except Exception:  # MLflow's errors are its own; no alias is what it means here
            return None
        tags = dict(found.tags or {})
        return {
            "model": name,
            "alias": alias,
            "mlflow_version": str(found.version),
            "version": int(tags["controlplane.version"])
            if "controlplane.version" in tags
            else None,
        }

    @staticmethod
    def _alias_text(alias: dict[str, Any] | None) -> str:
        if alias is None:
            return "(not mirrored yet)"
        return f"{alias['model']} v{alias['mlflow_version']} (our version {alias['version']})"

    def _alias_line(self, alias: str) -> str:
        return self._alias_text(self._alias(alias))

    # -- the summary ---------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        status = self.admin.get(self._artifact("policy", POLICY) + "/status")
        production = [h["ref"] for h in status["stages"].get("production", [])]
        actions = Counter(a for step in self.steps for a in step.actions)
        return {
            "format": "controlplane-demo/v1",
            "ok": bool(self.facts.get("verify", {}).get("ok")),
            "finished_at": clock.now().isoformat(),
            "duration_seconds": round(time.monotonic() - self._started, 1),
            "data_dir": str(self.workspace.root),
            "project": PROJECT,
            "origin": self.facts.get("origin"),
            "ledger_size": self._size(),
            "tokens_file": str(self.workspace.tokens_file),
            "env_dir": str(self.workspace.env_dir),
            "principals": {
                p.id: {"role": p.role, "key_id": p.key_id} for p in self.people.values()
            },
            "artifacts": dict(self.refs),
            "contracts": self.facts.get("contracts", {}),
            "policy": {"ref": f"policy/{POLICY}", "production": production},
            "mlflow": {
                "tracking_uri": self.settings.resolved_mlflow_tracking_uri,
                "after_first_promotion": self.facts.get("production_after_first"),
                "after_second_promotion": self.facts.get("production_after_second"),
                "after_rollback": (self.facts.get("rollback") or {}).get("mlflow_production"),
            },
            "forged_contract": self.facts.get("forged_contract"),
            "refused_without_evidence": self.facts.get("refused_without_evidence"),
            "rollback": self.facts.get("rollback"),
            "verify": self.facts.get("verify"),
            "actions": dict(sorted(actions.items())),
            "steps": [step.to_dict() for step in self.steps],
        }


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def _describe_data(version: Mapping[str, Any]) -> str:
    meta = version.get("metadata") or {}
    stats = meta.get("stats") or {}
    if version["kind"] != "dataset" or not stats:
        return str(version["ref"])
    parts = [f"{stats.get('rows')} rows", f"{stats.get('distinct_annotators')} annotators"]
    agreement = (stats.get("agreement") or {}).get("pairwise_agreement")
    if isinstance(agreement, int | float):
        parts.append(f"agreement {agreement:.2f}")
    return f"{version['ref']} ({', '.join(parts)})"


__all__ = ["INSTALL_HINT", "DemoFailed", "Narrator", "Person", "Scenario", "Step", "cast"]
