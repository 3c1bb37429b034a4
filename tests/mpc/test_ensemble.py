"""Ensembles (mpc.ensemble), the risk-aware objective and the imagination gap."""
import gymnasium as gym
import numpy as np
import pytest
import torch

from mpc.controller import MPCController
from mpc.ensemble import disagreement
from mpc.evaluation.metrics import gap_statistics
from mpc.objectives import make_objective
from mpc.planners import make_planner
from mpc.predictor import PredictorConfig
from mpc.world_model import WorldModel, WorldModelConfig
from tests.conftest import SPEED

N, D, A, P = 4, 8, 2, 3


def make_model(K, kind="transformer", seed=0, **pred):
    base = dict(kind=kind, depth=2, heads=4, dim=32, mlp_dim=64, dropout=0.0, num_hist=3)
    base.update(pred)
    n = N if kind == "transformer" else 1
    cfg = WorldModelConfig(num_tokens=n, token_dim=D, env_action_dim=A, proprio_dim=P,
                           predictor=PredictorConfig(**base), ensemble=K)
    torch.manual_seed(seed)
    return WorldModel(cfg).eval()


def copy_into_members(ensemble: WorldModel, single: WorldModel):
    """Every member of ``ensemble`` gets ``single``'s predictor weights."""
    with torch.no_grad():
        for name, p in ensemble.predictor.stacked.named_parameters():
            p.copy_(single.predictor.get_parameter(name).expand_as(p))


def context(n=N, S=5, H=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 3, n, D, generator=g), torch.randn(2, 3, P, generator=g),
            torch.randn(2, S, H, A, generator=g), torch.randn(2, 2, A, generator=g))


def assert_members_equal_the_single_model(ens: WorldModel, single: WorldModel, K: int, n: int = N):
    """Every member's rollout (with and without the cache), the members' mean and the eval-mode loss of
    ``ens`` equal ``single``'s, and the members' disagreement is zero."""
    zc, pc, a, pa = context(n=n)
    with torch.no_grad():
        z1, p1 = single.rollout(zc, pc, a, pa)
        zk, pk = ens.rollout(zc, pc, a, pa, members=True)  # (B, S, K, H, N, D)
        zm, _ = ens.rollout(zc, pc, a, pa)  # the members' mean
        z_ref, _ = ens.rollout(zc, pc, a, pa, use_cache=False, members=True)
    assert zk.shape == (2, 5, K, 4, *z1.shape[-2:]) and pk.shape == (2, 5, K, 4, P)
    for got in (zk, z_ref):
        torch.testing.assert_close(got, z1[:, :, None].expand_as(got), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pk, p1[:, :, None].expand_as(pk), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(zm, z1, atol=1e-5, rtol=1e-5)
    assert disagreement(zk).abs().max() < 1e-10
    # the teacher-forced loss of identical members is the single model's (no bootstrap in eval mode)
    batch = {"z": torch.randn(4, 4, *z1.shape[-2:]), "proprio": torch.randn(4, 4, P),
             "actions": torch.randn(4, 3, A)}
    with torch.no_grad():
        assert ens.loss(batch)[1]["loss"] == pytest.approx(single.loss(batch)[1]["loss"], rel=1e-5)


@pytest.mark.parametrize("kind,pred", [("transformer", {}), ("transformer", {"time_encoding": "absolute"}),
                                       ("mlp", {}), ("gru", {})])
def test_identical_members_equal_the_single_model(kind, pred):
    single, ens = make_model(1, kind, **pred), make_model(3, kind, seed=1, **pred)
    copy_into_members(ens, single)
    assert_members_equal_the_single_model(ens, single, 3, n=N if kind == "transformer" else 1)


def test_a_single_model_gives_one_member():
    m = make_model(1)
    zc, pc, a, pa = context()
    with torch.no_grad():
        zk, pk = m.rollout(zc, pc, a, pa, members=True)
    assert zk.shape == (2, 5, 1, 4, N, D) and pk.shape == (2, 5, 1, 4, P)


def train_a_few_steps(ens: WorldModel, steps: int = 5):
    """Adam on one fixed random batch: each member (or head) sees its own bootstrap of it."""
    g = torch.Generator().manual_seed(0)
    data = {"z": torch.randn(8, 4, N, D, generator=g), "proprio": torch.randn(8, 4, P, generator=g),
            "actions": torch.randn(8, 3, A, generator=g)}
    opt = torch.optim.Adam(ens.parameters(), lr=1e-2)
    ens.train()
    torch.manual_seed(0)
    for _ in range(steps):
        loss, _ = ens.loss(data)
        opt.zero_grad()
        loss.backward()
        opt.step()
    ens.eval()


def test_disagreement_is_zero_where_members_agree_and_grows_where_they_do_not():
    z = torch.zeros(1, 3, 4, 2, N, D)  # (B, S, K, H, N, D): all members agree
    spread = torch.tensor([-1.5, -0.5, 0.5, 1.5])  # members' offsets, variance 1.25
    z[0, 1, :, 1] += 0.1 * spread[:, None, None]
    z[0, 2, :, 1] += 1.0 * spread[:, None, None]
    z[0, 2, :, 0] += 7.0  # a shift shared by all members is no disagreement
    d = disagreement(z)  # (B, S, H)
    assert d.shape == (1, 3, 2)
    assert d[0, 0].abs().max() == 0 and d[0, :, 0].abs().max() == 0
    assert 0 < d[0, 1, 1] < d[0, 2, 1]
    assert d[0, 2, 1].item() == pytest.approx(1.25)


def test_risk_changes_the_planners_choice():
    """Mean prediction m(a) = 0.2 (a + 1) reaches the goal 0 at a = -1, where the two members
    disagree most (+-(1 - a)); at a = 1 they agree. Without risk the planner goes to a = -1; with
    risk = 1 the cost 0.04 (a + 1)^2 + (1 - a)^2 is least at a = 0.923."""
    box = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    z_goal = torch.zeros(1, 1, 1)

    def members(actions):  # (B, S, H, 1) -> (B, S, K=2, H, N=1, D=1)
        a = actions[..., 0]
        m, s = 0.2 * (a + 1), 1 - a
        return torch.stack([m + s, m - s], 2)[..., None, None]

    chosen = {}
    for risk in (0.0, 1.0):
        objective = make_objective("last", risk=risk)
        assert objective.members == (risk > 0)
        planner = make_planner("cem", box, horizon=1, seed=0, samples=200, iterations=6, elites=20)

        def cost_fn(actions):
            z = members(actions)
            return objective(z if objective.members else z.mean(2), z_goal)

        chosen[risk] = planner.optimize(cost_fn, batch=1).actions[0, 0, 0].item()
    assert chosen[0.0] < -0.9
    assert chosen[1.0] == pytest.approx(0.923, abs=0.05)
    # pessimistic: the worst member's cost (m + s)^2 is least at a = 1
    pess = make_objective("last", risk=1.0, risk_mode="pessimistic")
    a = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1)
    assert pess(members(a), z_goal).argmin().item() == 2


class _ExactEnv:
    """x' = x + SPEED * clip(a); each frame's image carries an id the model looks up exactly."""

    def __init__(self, table: dict, start):
        self.table, self.pos, self.t = table, np.asarray(start, np.float32), 0

    def obs(self):
        self.t += 1
        key = len(self.table)
        self.table[key] = self.pos.copy()
        img = np.zeros((8, 8, 3), np.uint8)
        img[0, 0] = [key % 256, key // 256 % 256, key // 65536]
        return {"pixels": img, "proprio": self.pos.copy()}

    def step(self, a):
        self.pos = (self.pos + np.float32(SPEED) * np.clip(a, -1, 1)).astype(np.float32)
        return self.obs()


class _ExactModel(torch.nn.Module):
    """The exact world model of :class:`_ExactEnv` (encode reads the true position)."""

    action_dim, proprio_dim, num_hist, frameskip, image_size, encoder = 2, 0, 1, 1, None, None

    def __init__(self, table):
        super().__init__()
        self.table = table
        self._anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)

    def encode(self, images):
        px = np.asarray(images).astype(np.int64)[:, 0, 0]  # (B, 3)
        keys = px[:, 0] + 256 * px[:, 1] + 65536 * px[:, 2]
        return torch.as_tensor(np.stack([self.table[int(k)] for k in keys]))[:, None, :]  # (B, 1, 2)

    def rollout(self, z_context, proprio_context, actions, past_actions=None):
        steps = SPEED * torch.cumsum(actions.clamp(-1, 1), dim=2)  # (B, S, H, 2)
        return z_context[:, -1][:, None, None] + steps[..., None, :], None


@pytest.mark.parametrize("replan_every", [1, 2])
def test_imagination_gap_of_an_exact_model_is_zero(replan_every):
    table = {}
    envs = [_ExactEnv(table, s) for s in ([-0.3, 0.2], [0.25, -0.1])]
    goal_env = _ExactEnv(table, [0.1, 0.1])
    goal = np.stack([goal_env.obs()["pixels"]] * 2)
    box = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    ctrl = MPCController(_ExactModel(table), "cem", horizon=3, replan_every=replan_every, action_space=box,
                         planner_options={"samples": 32, "iterations": 3, "elites": 4}, record_gap=True)
    obs = [e.obs() for e in envs]
    for _ in range(6):
        actions = ctrl.act({"pixels": np.stack([o["pixels"] for o in obs]),
                            "proprio": np.stack([o["proprio"] for o in obs])}, goal)
        obs = [e.step(a) for e, a in zip(envs, actions)]
    assert len(ctrl.imagination) == 6 // replan_every - 1
    pairs = [(p, r) for rec in ctrl.imagination for p, r in zip(rec["predicted"], rec["realised"])]
    stats = gap_statistics(pairs)
    assert stats["plans"] == len(pairs) and abs(stats["mean"]) < 1e-6
    assert max(abs(v) for v in stats["quantiles"].values()) < 1e-6
    assert stats["mean_predicted"] > 0 and stats["correlation"] == pytest.approx(1.0, abs=1e-4)


def test_standardized_risk_weighs_one_std_of_disagreement_as_one_std_of_cost():
    import torch

    from mpc.ensemble import disagreement
    from mpc.objectives import make_objective

    g = torch.Generator().manual_seed(0)
    B, S, K, H, N, D = 2, 6, 3, 2, 1, 4
    z = torch.randn(B, S, 1, H, N, D, generator=g).expand(B, S, K, H, N, D).clone()
    z += 1e-3 * torch.arange(S).view(1, S, 1, 1, 1, 1) * torch.randn(B, S, K, H, N, D, generator=g)  # tiny spread
    goal = torch.zeros(B, N, D)
    plain = make_objective("last")(z.mean(2), goal)
    raw = make_objective("last", risk=1.0)(z, goal) - plain
    std = make_objective("last", risk=1.0, risk_mode="standardized")(z, goal) - plain
    dis = disagreement(z)[..., -1]
    assert torch.allclose(raw, dis, atol=1e-7)
    assert raw.std(1).max() < 1e-2 * plain.std(1).min()  # raw disagreement: far below the cost's spread
    assert torch.allclose(std.std(1, unbiased=False), plain.std(1, unbiased=False), rtol=1e-4)
    ratio = std[:, 1:] / dis[:, 1:]  # candidate 0's members agree exactly (0 / 0)
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4)  # one scale per problem
    agree = z[:, :, :1].expand(B, S, K, H, N, D)  # members agree: no risk term, no NaN
    assert torch.allclose(make_objective("last", risk=2.0, risk_mode="standardized")(agree, goal),
                          make_objective("last")(agree[:, :, 0], goal))


# --- ensemble_kind="heads": one shared trunk, K output heads --------------------------------------------
def make_heads(K, seed=0, **pred):
    base = dict(kind="transformer", depth=2, heads=4, dim=32, mlp_dim=64, dropout=0.0, num_hist=3)
    base.update(pred)
    cfg = WorldModelConfig(num_tokens=N, token_dim=D, env_action_dim=A, proprio_dim=P,
                           predictor=PredictorConfig(**base), ensemble=K, ensemble_kind="heads")
    torch.manual_seed(seed)
    return WorldModel(cfg).eval()


def copy_into_heads(ens: WorldModel, single: WorldModel):
    """The trunk gets ``single``'s weights and every head ``single``'s linear readout (the heads' MLPs add
    zero while their output layer is zero, as at initialisation)."""
    h, s = ens.predictor, single.predictor
    with torch.no_grad():
        for name, p in h.trunk.named_parameters():
            p.copy_(s.get_parameter(name))
        h.z_w.copy_(s.head.weight.T.expand_as(h.z_w))
        h.z_b.copy_(s.head.bias.expand_as(h.z_b))
        h.p_w.copy_(s.proprio_head.weight.T.expand_as(h.p_w))
        h.p_b.copy_(s.proprio_head.bias.expand_as(h.p_b))
        assert h.out_w.abs().max() == 0 and h.out_b.abs().max() == 0  # zero-initialised


@pytest.mark.parametrize("pred", [{}, {"time_encoding": "absolute"}, {"residual": True}])
def test_identical_heads_equal_the_single_model(pred):
    single, ens = make_model(1, **pred), make_heads(4, seed=1, **pred)
    copy_into_heads(ens, single)
    assert_members_equal_the_single_model(ens, single, 4)


def test_heads_feed_their_mean_back_and_the_cache_equals_recomputing():
    ens = make_heads(3)
    zc, pc, a, pa = context()
    with torch.no_grad():
        zk, pk = ens.rollout(zc, pc, a, pa, members=True)
        z_ref, p_ref = ens.rollout(zc, pc, a, pa, members=True, use_cache=False)
        # step 1 by hand: the trunk on the context, every head on its features
        x = ens.predictor.trunk.features(zc, ens._norm_proprio(pc), torch.cat(
            [ens._norm_actions(pa), ens._norm_actions(a[:, 0, :1])], 1))  # (B, T, N, W) for candidate 0
        z1, _ = ens.predictor.readout_members(x[:, -1], zc[:, -1])  # (K, B, N, D)
    torch.testing.assert_close(zk, z_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pk, p_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(zk[:, 0, :, 0], z1.movedim(0, 1), atol=1e-5, rtol=1e-5)
    assert disagreement(zk).min() > 0  # fresh heads differ (own random initialisations)


@pytest.mark.parametrize("kind", ["full", "heads"])
def test_members_differ_after_training_on_different_bootstraps_and_load_from_one_checkpoint(tmp_path, kind):
    single = make_model(1)
    if kind == "full":
        ens = make_model(3, seed=1)
        copy_into_members(ens, single)  # same initialisation: only the bootstraps can separate them
    else:
        ens = make_heads(3, seed=1)
        copy_into_heads(ens, single)
    train_a_few_steps(ens)
    # a readout weight of every member, (K, ...)
    w = ens.predictor.stacked.get_parameter("head.weight") if kind == "full" else ens.predictor.z_w
    assert not torch.allclose(w[0], w[1]) and not torch.allclose(w[1], w[2])
    zc, pc, a, pa = context()
    with torch.no_grad():
        zk, _ = ens.rollout(zc, pc, a, pa, members=True)
    assert disagreement(zk).min() > 0
    # one checkpoint holds the whole ensemble
    loaded = WorldModel.load(ens.save(tmp_path / "ens.safetensors"), encoder=None)
    assert loaded.config.ensemble_kind == kind and loaded.ensemble == 3
    with torch.no_grad():
        torch.testing.assert_close(loaded.rollout(zc, pc, a, pa, members=True)[0], zk)
    if kind == "full":
        assert loaded.predictor.member(2).head.weight.shape == w[2].shape


def test_bootstrap_counts_resample_each_members_batch():
    from mpc.ensemble import bootstrap_counts

    torch.manual_seed(0)
    c = bootstrap_counts(4, 50)
    assert c.shape == (4, 50) and torch.all(c.sum(1) == 50) and torch.all(c >= 0)
    assert (c == 0).float().mean() > 0.2  # about 1/e of the windows are left out of each bootstrap
    assert not torch.equal(c[0], c[1])


def test_heads_need_the_transformer_trunk():
    with pytest.raises(ValueError, match="ensemble_kind='heads' needs predictor.kind='transformer'"):
        WorldModelConfig(num_tokens=1, token_dim=D, env_action_dim=A, proprio_dim=P,
                         predictor=PredictorConfig(kind="mlp"), ensemble=3, ensemble_kind="heads")
    with pytest.raises(ValueError, match="ensemble_kind must be one of"):
        WorldModelConfig(num_tokens=N, token_dim=D, env_action_dim=A, proprio_dim=P, ensemble=3,
                         ensemble_kind="shared")


def test_a_gradient_planner_plans_through_the_heads_with_risk():
    """Autograd goes through the trunk and every head; the risk term's gradient reaches the actions."""
    ens = make_heads(3)
    zc, pc, _, pa = context()
    actions = torch.zeros(2, 5, 4, A, requires_grad=True)
    objective = make_objective("last", risk=1.0)
    z, p = ens.rollout(zc, pc, actions, pa, members=True)
    cost = objective(z, torch.zeros(2, N, D))
    cost.sum().backward()
    assert cost.shape == (2, 5) and actions.grad is not None and actions.grad.abs().sum() > 0
