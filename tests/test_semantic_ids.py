"""genrec.semantic_ids: RQ-VAE contract and training, Sinkhorn, collisions and health, the ID file, embeddings."""

import json

import numpy as np
import pytest
import torch

from genrec.data import Interactions
from genrec.semantic_ids import RQVAE, RQVAEOutput, SemanticIDs, SemanticIDsError, embed_texts
from genrec.semantic_ids import embed as embed_module
from genrec.semantic_ids import rqvae as rqvae_module
from genrec.semantic_ids.collisions import (append_level, codebook_perplexity, codebook_usage, collision_rate,
                                            max_collision_group, resolve_collisions, shared_field_ratio,
                                            sinkhorn_last_level)
from genrec.semantic_ids.embed import embedding_cache_key
from genrec.semantic_ids.sinkhorn import sinkhorn_assign, sinkhorn_plan

SIZES = (8, 4, 2)


def small_model(**kwargs) -> RQVAE:
    torch.manual_seed(0)
    return RQVAE(input_dim=6, **{"hidden_dims": (16,), "latent_dim": 4, "codebook_sizes": SIZES, **kwargs})


def identity_model(codebook_sizes, **kwargs) -> RQVAE:
    """A one-layer encoder set to the identity (z = x), codebooks marked initialised: hand-controlled codes."""
    model = RQVAE(input_dim=2, hidden_dims=(), latent_dim=2, codebook_sizes=codebook_sizes, **kwargs)
    with torch.no_grad():
        model.encoder[0].weight.copy_(torch.eye(2))
        model.encoder[0].bias.zero_()
    model.initialized.fill_(True)
    return model


def counting_kmeans(monkeypatch) -> list[int]:
    """Replaces rqvae.kmeans by a wrapper that records k of every call."""
    calls, real = [], rqvae_module.kmeans

    def wrapper(x, k, *args, **kwargs):
        calls.append(k)
        return real(x, k, *args, **kwargs)

    monkeypatch.setattr(rqvae_module, "kmeans", wrapper)
    return calls


# --- RQ-VAE ---------------------------------------------------------------------------------------


def test_forward_returns_one_structure_in_train_and_eval():
    model = small_model()
    x = torch.randn(16, 6)
    for training in (True, False, True):
        model.train(training)
        output, loss = model(x)
        assert isinstance(output, RQVAEOutput)
        assert output.reconstruction.shape == (16, 6)
        assert output.codes.shape == (16, 3) and output.codes.dtype == torch.int64
        assert set(output.losses) == {"reconstruction", "quantization"}
        assert loss.ndim == 0
        assert torch.allclose(loss, output.losses["reconstruction"] + output.losses["quantization"])
        for level, size in enumerate(SIZES):  # per-level codebook sizes bound the codes
            assert 0 <= output.codes[:, level].min() and output.codes[:, level].max() < size


def test_encode_decode_round_trip_and_decode_checks():
    model = small_model()
    x = torch.randn(16, 6)
    model(x)  # training forward: k-means initialisation
    model.eval()
    codes, distances = model.encode(x)
    output, _ = model(x)
    assert torch.equal(codes, output.codes)
    assert [tuple(d.shape) for d in distances] == [(16, 8), (16, 4), (16, 2)]
    assert torch.equal(distances[0].argmin(1), codes[:, 0])
    decoded = model.decode(codes)
    assert decoded.shape == (16, 6)
    assert torch.allclose(decoded, output.reconstruction, atol=1e-6)
    # decode uses the codes it is given: another code at level 0 gives another reconstruction
    other = codes.clone()
    other[:, 0] = (other[:, 0] + 1) % 8
    assert not torch.allclose(model.decode(other), decoded)

    with pytest.raises(ValueError, match=r"shape \[B, 3\]"):
        model.decode(codes[:, :2])
    with pytest.raises(ValueError, match=r"shape \[B, 3\]"):
        model.decode(codes[0])
    for level, bad in [(0, 8), (1, 4), (2, 2), (1, -1)]:
        wrong = codes.clone()
        wrong[3, level] = bad
        with pytest.raises(ValueError, match=f"level {level} codes must lie in 0..{SIZES[level] - 1}"):
            model.decode(wrong)


def test_constructor_rejects_bad_sizes_and_levels():
    with pytest.raises(ValueError, match="codebook_sizes"):
        RQVAE(input_dim=4, codebook_sizes=())
    with pytest.raises(ValueError, match="codebook_sizes"):
        RQVAE(input_dim=4, codebook_sizes=(4, 0))
    with pytest.raises(ValueError, match=r"sinkhorn_levels \[3\] name levels outside 0..2"):
        RQVAE(input_dim=4, codebook_sizes=SIZES, sinkhorn_levels=(3,))
    with pytest.raises(ValueError, match="sinkhorn_levels"):
        RQVAE(input_dim=4, codebook_sizes=SIZES, sinkhorn_levels=(-1,))


def test_kmeans_initialisation_runs_once_and_survives_state_dict(monkeypatch):
    calls = counting_kmeans(monkeypatch)
    model = small_model()
    x = torch.randn(32, 6)
    model.eval()
    model(x)
    assert calls == [] and not bool(model.initialized)  # inference never initialises
    model.train()
    model(x)
    assert calls == [8, 4, 2] and bool(model.initialized)
    first = [codebook.detach().clone() for codebook in model.codebooks]
    assert not torch.equal(first[0], torch.zeros(8, 4))  # the centroids were written
    model(x)
    assert calls == [8, 4, 2]

    resumed = small_model()
    resumed.load_state_dict(model.state_dict())
    assert bool(resumed.initialized)
    resumed.train()
    resumed(x)
    assert calls == [8, 4, 2]  # a resumed model keeps its codebooks
    assert torch.equal(resumed.codebooks[0].detach(), first[0])


def test_too_small_init_batch_names_the_fix():
    model = small_model()
    with pytest.raises(ValueError, match=r"8 codes needs at least 8 vectors, got 5: raise fit\.batch_size"):
        model(torch.randn(5, 6))
    assert not bool(model.initialized)  # a failed initialisation is not marked done


def clustered(n=256, centers=8, dim=16, seed=0):
    """n points around `centers` standard-normal means (noise 0.1), like standardised item embeddings."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(centers, dim, generator=g)
    return means[torch.arange(n) % centers] + 0.1 * torch.randn(n, dim, generator=g)


def test_training_lowers_the_loss_on_clustered_data():
    # measured over seeds 0..7: total loss ends at 4-11 % of its start, reconstruction at 2-3 %
    x = clustered()
    torch.manual_seed(0)
    model = RQVAE(input_dim=16, hidden_dims=(32,), latent_dim=8, codebook_sizes=(8, 8), dead_code_steps=10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses, reconstruction = [], []
    for _ in range(100):
        output, loss = model(x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        reconstruction.append(output.losses["reconstruction"].item())
    assert losses[-1] < 0.25 * losses[0], (losses[0], losses[-1])
    assert reconstruction[-1] < 0.1 * reconstruction[0], (reconstruction[0], reconstruction[-1])


def test_gradients_reach_encoder_through_straight_through_and_codebooks():
    model = small_model(dead_code_steps=0)
    x = torch.randn(32, 6)
    output, _ = model(x)
    # the reconstruction loss alone reaches the encoder (straight-through), but not the codebooks
    output.losses["reconstruction"].backward(retain_graph=True)
    assert model.encoder[0].weight.grad.abs().sum() > 0
    assert all(codebook.grad is None or codebook.grad.abs().sum() == 0 for codebook in model.codebooks)
    model.zero_grad()
    output.losses["quantization"].backward()
    assert all(codebook.grad.abs().sum() > 0 for codebook in model.codebooks)


def test_quantization_loss_and_gradients_by_hand():
    model = identity_model((4, 3), dead_code_steps=0)
    with torch.no_grad():
        model.codebooks[0].copy_(torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]]))
        model.codebooks[1].copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    x = torch.tensor([[4.6, 0.2]], requires_grad=True)  # code 1, residual r1 = (-0.4, 0.2), then code 0
    output, _ = model(x)
    assert output.codes.tolist() == [[1, 0]]
    # each level: (1 + beta) * mean((e - r)^2) = 1.25 * (0.16 + 0.04) / 2
    assert output.losses["quantization"].item() == pytest.approx(0.25)
    output.losses["quantization"].backward()
    # codebook term: d/de mean((e - sg r)^2) = e - r for the chosen row only (B = 1, D = 2)
    assert torch.allclose(model.codebooks[0].grad, torch.tensor([[0.0, 0.0], [0.4, -0.2], [0.0, 0.0], [0.0, 0.0]]))
    assert torch.allclose(model.codebooks[1].grad, torch.tensor([[0.4, -0.2], [0.0, 0.0], [0.0, 0.0]]))
    # commitment: beta * (r - e) per level reaches z = x; the level-1 residual is z - sg(e0)
    assert torch.allclose(x.grad, torch.tensor([[-0.2, 0.1]]))


def test_dead_codes_are_replaced_by_batch_residuals():
    torch.manual_seed(0)
    model = identity_model((4, 3), dead_code_steps=1)
    with torch.no_grad():
        model.codebooks[0].copy_(torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]]))
        model.codebooks[1].copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    x = torch.tensor([[4.6, 0.2]]).repeat(6, 1)  # all on code 1 of level 0, then residual (-0.4, 0.2) -> code 0
    output, _ = model(x)
    assert output.codes.tolist() == [[1, 0]] * 6
    assert model.replaced_codes.tolist() == [3, 2]
    level0, level1 = model.codebooks[0].detach(), model.codebooks[1].detach()
    assert torch.equal(level0[1], torch.tensor([5.0, 0.0]))  # the used code stays
    assert torch.allclose(level0[[0, 2, 3]], torch.tensor([[4.6, 0.2]] * 3))  # dead codes: the batch's residual
    assert torch.equal(level1[0], torch.tensor([0.0, 0.0]))
    assert torch.allclose(level1[[1, 2]], torch.tensor([[-0.4, 0.2]] * 2))
    assert model.unused_steps.sum() == 0

    patient = identity_model((4,), dead_code_steps=2)
    with torch.no_grad():
        patient.codebooks[0].copy_(torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]]))
    patient(x)
    assert patient.replaced_codes.tolist() == [0] and patient.unused_steps[0].tolist() == [1, 0, 1, 1]
    patient(x)
    assert patient.replaced_codes.tolist() == [3]

    never = identity_model((4,), dead_code_steps=0)
    never(x)
    never.eval()(x)
    assert never.replaced_codes.tolist() == [0]


# --- Sinkhorn --------------------------------------------------------------------------------------


def piled_cost() -> torch.Tensor:
    """[8, 8]: code 0 is every point's nearest; the balanced optimum is the identity."""
    i = torch.arange(8.0)
    return (torch.arange(8) != 0).float()[None, :] + 0.5 * (i[:, None] - i[None, :]) ** 2 / 64


def test_sinkhorn_spreads_points_nearest_piles_up():
    cost = piled_cost()
    assert cost.argmin(1).tolist() == [0] * 8
    assert sinkhorn_assign(cost).tolist() == list(range(8))
    plan = sinkhorn_plan(cost).exp()
    assert torch.allclose(plan.sum(0), torch.full((8,), 1 / 8), atol=1e-4)  # balanced columns
    assert torch.allclose(plan.sum(1), torch.full((8,), 1 / 8), atol=1e-4)
    # costs are rescaled to [-1, 1] first, so epsilon means the same at any distance scale
    assert torch.allclose(sinkhorn_plan(100 * cost + 7).exp(), plan, atol=1e-3)
    assert torch.allclose(sinkhorn_plan(cost / 100).exp(), plan, atol=1e-3)


@pytest.mark.parametrize("cost,epsilon,iterations", [
    (torch.ones(8), 0.003, 50), (torch.ones(0, 4), 0.003, 50), (torch.ones(4, 0), 0.003, 50),
    (torch.ones(4, 4), 0.0, 50), (torch.ones(4, 4), -1.0, 50), (torch.ones(4, 4), 0.003, 0)])
def test_sinkhorn_rejects_bad_arguments(cost, epsilon, iterations):
    with pytest.raises(ValueError, match="sinkhorn needs"):
        sinkhorn_assign(cost, epsilon, iterations)


def test_sinkhorn_levels_balance_training_codes_only():
    model = identity_model((8,), sinkhorn_levels=(0,), dead_code_steps=0)
    angles = torch.arange(7) * 2 * torch.pi / 7
    with torch.no_grad():  # code 0 at the origin, codes 1..7 far away on a circle
        model.codebooks[0].copy_(torch.cat([torch.zeros(1, 2), 10 * torch.stack([angles.cos(), angles.sin()], 1)]))
    x = 0.5 * torch.stack([(angles - 0.3).cos(), (angles - 0.3).sin()], 1)
    x = torch.cat([torch.zeros(1, 2), x])  # 8 points, all nearest to code 0
    train_codes = model(x)[0].codes[:, 0]
    assert sorted(train_codes.tolist()) == list(range(8))
    assert model.eval()(x)[0].codes[:, 0].tolist() == [0] * 8  # inference: nearest code
    assert model.encode(x)[0][:, 0].tolist() == [0] * 8
    nearest = identity_model((8,), dead_code_steps=0)
    nearest.codebooks[0].data.copy_(model.codebooks[0].data)
    assert nearest(x)[0].codes[:, 0].tolist() == [0] * 8  # without the option, training piles up


# --- collisions and codebook health ----------------------------------------------------------------


def test_append_level_ranks_duplicates_in_item_order():
    codes = np.array([[0, 1], [2, 3], [0, 1], [0, 1], [2, 3], [5, 5]])
    extended, size = append_level(codes)
    assert extended[:, :2].tolist() == codes.tolist()
    assert extended[:, 2].tolist() == [0, 0, 1, 2, 1, 0]
    assert size == 3
    unique, size = append_level(np.array([[1, 2], [2, 1]]))
    assert unique[:, 2].tolist() == [0, 0] and size == 1


# items 0..2 share (0, 1); item 3 is (0, 2), item 4 (1, 1) has another prefix; last codebook of 4
PLANTED = np.array([[0, 1], [0, 1], [0, 1], [0, 2], [1, 1]])


def test_sinkhorn_last_level_identical_duplicates():
    distances = np.tile(np.array([[3.0, 1.0, 2.0, 4.0]]), (5, 1))  # identical items: identical distances
    out = sinkhorn_last_level(PLANTED, distances)
    assert collision_rate(out) == 0
    assert out[:, 0].tolist() == PLANTED[:, 0].tolist()
    assert out[[0, 3, 4]].tolist() == [[0, 1], [0, 2], [1, 1]]  # the first tied holder keeps (0, 1)
    assert sorted(out[[1, 2], 1].tolist()) == [0, 3]  # the two codes nobody in prefix 0 uses
    assert PLANTED[1].tolist() == [0, 1]  # the input is not modified


def test_sinkhorn_last_level_closest_holder_keeps_and_movers_follow_distances():
    distances = np.array([[0.45, 0.5, 9.0, 9.0],  # prefers code 0 after code 1
                          [9.0, 0.4, 9.0, 0.6],   # prefers code 3 after code 1
                          [0.7, 0.1, 9.0, 9.0],   # closest to code 1: keeps it
                          [9.0, 9.0, 0.1, 9.0],
                          [9.0, 0.1, 9.0, 9.0]])
    out = sinkhorn_last_level(PLANTED, distances)
    assert out.tolist() == [[0, 0], [0, 3], [0, 1], [0, 2], [1, 1]]


def test_sinkhorn_last_level_refuses_a_group_larger_than_the_codebook():
    codes = np.array([[0, 1], [0, 1], [0, 0]])
    with pytest.raises(ValueError, match=r"3 items share the code prefix \[0\], more than the 2 codes.*append_level"):
        sinkhorn_last_level(codes, np.ones((3, 2)))


def test_resolve_collisions_both_strategies():
    distances = np.tile(np.array([[3.0, 1.0, 2.0, 4.0]]), (5, 1))
    appended, sizes = resolve_collisions(PLANTED, [2, 4], "append_level")
    assert sizes == [2, 4, 3] and collision_rate(appended) == 0 and appended.shape == (5, 3)
    moved, sizes = resolve_collisions(PLANTED, [2, 4], "sinkhorn", distances)
    assert sizes == [2, 4] and collision_rate(moved) == 0 and moved.shape == (5, 2)
    with pytest.raises(ValueError, match="needs the last level's distances"):
        resolve_collisions(PLANTED, [2, 4], "sinkhorn")
    with pytest.raises(ValueError, match="unknown collision strategy 'dedupe'; use one of append_level, sinkhorn"):
        resolve_collisions(PLANTED, [2, 4], "dedupe")


def test_collision_and_health_metrics_by_hand():
    codes = np.array([[0, 0], [0, 0], [0, 1], [1, 1]])
    assert collision_rate(codes) == 0.25  # 3 distinct tuples of 4
    assert max_collision_group(codes) == 2
    assert max_collision_group(PLANTED) == 3
    assert collision_rate(np.array([[1, 2], [2, 1]])) == 0.0 and max_collision_group(np.array([[1, 2], [2, 1]])) == 1
    assert collision_rate(np.zeros((0, 2), dtype=np.int64)) == 0.0
    assert codebook_usage(codes, [4, 2]) == [0.5, 1.0]
    spread = np.array([[0, 2], [1, 2], [2, 2], [3, 2], [0, 2], [1, 2], [2, 2], [3, 2]])
    assert codebook_perplexity(spread, [4, 4]) == pytest.approx([4.0, 1.0])  # uniform over 4; collapse
    assert codebook_perplexity(codes, [2, 2]) == pytest.approx([np.exp(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25))),
                                                                2.0])


def test_shared_field_ratio_by_hand():
    labels = [{"a"}, {"a"}, {"b"}, {"b", "c"}]
    # pairs sharing a label: (0,1), (2,3) of 6 -> 1/3; both same-first-code pairs share -> 1; ratio 3
    assert shared_field_ratio(np.array([0, 0, 1, 1]), labels) == pytest.approx(3.0)
    # same-code pairs (0,2) and (1,3) share nothing -> 0
    assert shared_field_ratio(np.array([0, 1, 0, 1]), labels) == 0.0
    # same-code pairs (0,1), (0,2), (1,2): 1 of 3 shares -> (1/3) / (1/3) = 1
    assert shared_field_ratio(np.array([0, 0, 0, 1]), labels) == pytest.approx(1.0)
    assert shared_field_ratio(np.array([0, 1, 2, 3]), labels) is None  # no pair shares a first code
    assert shared_field_ratio(np.array([0, 0, 1, 1]), [set(), set(), set(), set()]) is None
    assert shared_field_ratio(np.array([0, 0, 1, 1]), [{"a"}, {"b"}, {"c"}, {"d"}]) is None  # no pair shares


# --- the semantic-ID file --------------------------------------------------------------------------


def toy_interactions(name="toy", items=("a", "b", "c")) -> Interactions:
    users = ["u1", "u1", "u2"]
    return Interactions.from_log(name, users, list(items), np.array([1.0, 2.0, 3.0]))


TOY_CODES = np.array([[0, 1], [1, 0], [2, 3]])  # items a, b, c; codebooks of 3 and 4


def saved(tmp_path, interactions=None):
    interactions = interactions or toy_interactions()
    ids = SemanticIDs.from_codes(TOY_CODES, [3, 4], interactions)
    path = tmp_path / "semantic_ids.json"
    ids.save(path)
    return path, ids


def test_from_codes_save_load_round_trip(tmp_path):
    interactions = toy_interactions()
    path, ids = saved(tmp_path, interactions)
    assert ids.codes.tolist() == [[-1, -1], [0, 1], [1, 0], [2, 3]]
    assert (ids.num_levels, ids.num_items) == (2, 3)
    payload = json.loads(path.read_text())
    assert payload == {"items": {"a": [0, 1], "b": [1, 0], "c": [2, 3]}, "levels": 2, "codebook_sizes": [3, 4],
                       "dataset": "toy", "fingerprint": interactions.fingerprint()}
    loaded = SemanticIDs.load(path, interactions)
    assert loaded.codes.tolist() == ids.codes.tolist() and loaded.codes.dtype == np.int64
    assert loaded.codebook_sizes == [3, 4] and loaded.dataset == "toy"
    assert loaded.fingerprint == interactions.fingerprint()
    with pytest.raises(SemanticIDsError, match="2 raw item ids for 3 code rows"):
        SemanticIDs(ids.codes, ids.codebook_sizes, ids.dataset, ids.fingerprint, ids.item_ids[:3])


def test_read_needs_no_dataset_and_aligns_to_one(tmp_path):
    interactions = toy_interactions()
    path, ids = saved(tmp_path, interactions)
    read = SemanticIDs.read(path)
    assert read.item_ids == ["[PAD]", "a", "b", "c"] and read.codes.tolist() == ids.codes.tolist()
    # the same items in another index order: rows follow the dataset's indices
    shuffled = Interactions.from_log("toy", ["u1", "u1", "u2"], ["c", "a", "b"], np.array([1.0, 2.0, 3.0]))
    moved = SemanticIDs(read.codes, read.codebook_sizes, read.dataset, shuffled.fingerprint(), read.item_ids)
    aligned = moved.aligned(shuffled)
    assert aligned.item_ids == list(shuffled.item_ids)
    for row, raw in enumerate(shuffled.item_ids[1:], start=1):
        assert aligned.codes[row].tolist() == read.codes[read.item_ids.index(raw)].tolist()


def test_trie_walks_every_item_and_only_items(tmp_path):
    _, ids = saved(tmp_path)
    trie = ids.trie(offset=10, end_token=2)
    assert trie.max_depth == 3 and len(trie) == 3
    tokens = torch.as_tensor(np.hstack([ids.token_ids(10)[1:], np.full((3, 1), 2)]))
    assert trie.values(trie.walk(tokens)).tolist() == [1, 2, 3]
    assert trie.values(trie.walk(torch.tensor([[10, 13, 2]]))).tolist() == [-1]  # codes of no item


def test_token_ids_offset_per_level(tmp_path):
    _, ids = saved(tmp_path)
    # level 0 starts at offset, level 1 at offset + 3
    assert ids.token_ids(10).tolist() == [[-1, -1], [10, 14], [11, 13], [12, 16]]
    assert ids.token_ids().tolist() == [[-1, -1], [0, 4], [1, 3], [2, 6]]
    assert ids.codes.tolist() == [[-1, -1], [0, 1], [1, 0], [2, 3]]  # not modified


def test_from_codes_checks():
    interactions = toy_interactions()
    with pytest.raises(SemanticIDsError, match="share a code tuple"):
        SemanticIDs.from_codes(np.array([[0, 1], [0, 1], [2, 3]]), [3, 4], interactions)
    with pytest.raises(SemanticIDsError, match="level 1 has a code >= its codebook size 4"):
        SemanticIDs.from_codes(np.array([[0, 1], [1, 0], [2, 4]]), [3, 4], interactions)


def test_load_refuses_other_data(tmp_path):
    path, ids = saved(tmp_path)
    other = toy_interactions(items=("a", "b", "d"))
    assert other.fingerprint() != ids.fingerprint
    with pytest.raises(SemanticIDsError, match=rf"made for other data \(dataset 'toy', fingerprint {ids.fingerprint}\)"
                                               rf".*{other.fingerprint()}.*rebuild it"):
        SemanticIDs.load(path, other)
    # same items, other sequences: still other data
    reordered = Interactions.from_log("toy", ["u1", "u2", "u2"], ["a", "b", "c"], np.array([1.0, 2.0, 3.0]))
    with pytest.raises(SemanticIDsError, match="fingerprint"):
        SemanticIDs.load(path, reordered)


def edit(path, change):
    payload = json.loads(path.read_text())
    change(payload)
    path.write_text(json.dumps(payload))


def test_load_refuses_broken_files(tmp_path):
    interactions = toy_interactions()
    with pytest.raises(SemanticIDsError, match="not found.*rebuild it"):
        SemanticIDs.load(tmp_path / "missing.json", interactions)
    path, _ = saved(tmp_path)
    path.write_text('{"items": {"a": [0, 1]')
    with pytest.raises(SemanticIDsError, match="not a semantic-ID file .JSONDecodeError"):
        SemanticIDs.load(path, interactions)
    path, _ = saved(tmp_path)
    edit(path, lambda p: p.pop("codebook_sizes"))
    with pytest.raises(SemanticIDsError, match="not a semantic-ID file .KeyError"):
        SemanticIDs.load(path, interactions)


@pytest.mark.parametrize("change,message", [
    (lambda p: p["items"].update(zzz=[0, 0]), "unknown item id 'zzz' for toy"),
    (lambda p: p["items"].update(b=[0, 1]), "share a code tuple"),
    (lambda p: p["items"].update(c=[3, 0]), "level 0 has a code >= its codebook size 3"),
    (lambda p: p["items"].update(c=[2, 4]), "level 1 has a code >= its codebook size 4"),
    (lambda p: p["items"].pop("b"), "item index 2 .and 0 more. has no codes"),
    (lambda p: p["items"].update(c=[2, 3, 0]), r"item 'c' has codes \[2, 3, 0\], expected 2 non-negative integers"),
    (lambda p: p["items"].update(c=["x", 1]), "expected 2 non-negative integers"),
    (lambda p: p["items"].update(c=[-3, 0]), "expected 2 non-negative integers"),
    (lambda p: p["items"].update(c=[2.9, 1]), "expected 2 non-negative integers"),
    (lambda p: p.update(levels=3), "'codebook_sizes' have 3 entries"),
])
def test_load_refuses_bad_content(tmp_path, change, message):
    path, _ = saved(tmp_path)
    edit(path, change)
    with pytest.raises(SemanticIDsError, match=message):
        SemanticIDs.load(path, toy_interactions())


def test_load_refuses_a_short_tuple(tmp_path):
    path, _ = saved(tmp_path)
    edit(path, lambda p: p["items"].update(c=[2]))  # one code for two levels; becomes [2, 2]
    with pytest.raises(SemanticIDsError, match="expected 2 non-negative integers"):
        SemanticIDs.load(path, toy_interactions())


# --- text embeddings --------------------------------------------------------------------------------


def test_embed_texts_rejects_empty_input():
    with pytest.raises(ValueError, match="no texts"):
        embed_texts([], cache=False)
    with pytest.raises(ValueError, match="1 empty text.s., first at position 2"):
        embed_texts(["Toy Story", "Heat", "  ", "Casino"], cache=False)


@pytest.fixture
def fake_encoder(monkeypatch, tmp_path):
    """Cache in tmp_path; ``_encode`` replaced by a counter returning row i = [len(text_i), i]."""
    monkeypatch.setenv("GENREC_DATA_DIR", str(tmp_path))
    calls = []

    def fake(texts, model, batch_size, max_length, normalize, device):
        calls.append(list(texts))
        return np.array([[len(text), i] for i, text in enumerate(texts)], dtype=np.float32)

    monkeypatch.setattr(embed_module, "_encode", fake)
    return calls


def test_embedding_cache_reuses_and_keys_by_content(fake_encoder, tmp_path):
    texts = ["Toy Story", "Heat"]
    first = embed_texts(texts)
    assert first.tolist() == [[9, 0], [4, 1]] and len(fake_encoder) == 1
    key = embedding_cache_key("bundled:all-minilm-l6-v2", texts, 128, True)
    path = tmp_path / "cache" / "embeddings" / f"{key}.npy"
    assert path.is_file() and np.load(path).tolist() == first.tolist()
    second = embed_texts(texts)
    assert len(fake_encoder) == 1 and second.tolist() == first.tolist()  # read from the cache
    embed_texts(["Toy Story", "Heat", "Casino"])
    embed_texts(["Heat", "Toy Story"])
    embed_texts(texts, max_length=64)
    assert len(fake_encoder) == 4  # other texts, order and settings are not the cached ones
    assert len(list(path.parent.glob("*.npy"))) == 4 and not list(path.parent.glob(".*"))
    embed_texts(texts, cache=False)
    assert len(fake_encoder) == 5


def test_unreadable_or_stale_cache_is_recomputed(fake_encoder, tmp_path, capsys):
    texts = ["Toy Story", "Heat"]
    path = tmp_path / "cache" / "embeddings" / f"{embedding_cache_key('bundled:all-minilm-l6-v2', texts, 128, True)}.npy"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not numpy")
    assert embed_texts(texts).tolist() == [[9, 0], [4, 1]] and len(fake_encoder) == 1
    assert "ignoring unreadable embedding cache" in capsys.readouterr().err
    np.save(path, np.zeros((3, 2), dtype=np.float32))  # wrong number of rows
    assert embed_texts(texts).tolist() == [[9, 0], [4, 1]] and len(fake_encoder) == 2


def test_embedding_cache_key_covers_every_input():
    base = embedding_cache_key("bundled:all-minilm-l6-v2", ["ab", "c"], 128, True)
    assert base == embedding_cache_key("bundled:all-minilm-l6-v2", ["ab", "c"], 128, True)
    assert len(base) == 24
    others = {
        embedding_cache_key("bundled:all-minilm-l6-v2", ["ab", "c"], 64, True),
        embedding_cache_key("bundled:all-minilm-l6-v2", ["ab", "c"], 128, False),
        embedding_cache_key("bundled:all-minilm-l6-v2", ["a", "bc"], 128, True),  # same characters, other split
        embedding_cache_key("bundled:all-minilm-l6-v2", ["abc"], 128, True),
        embedding_cache_key("bundled:all-minilm-l6-v2", ["c", "ab"], 128, True),
        embedding_cache_key("some/other-model", ["ab", "c"], 128, True),
    }
    assert base not in others and len(others) == 6


def test_bundled_minilm_embeds_similar_titles_close():
    texts = ["Toy Story (1995). Genres: Animation, Children's, Comedy.",
             "Toy Story 2 (1999). Genres: Animation, Children's, Comedy.",
             "Schindler's List (1993). Genres: Drama, War."]
    vectors = embed_texts(texts, cache=False)  # the real encoder, never writing a cache; one padded batch
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2 and similarity[0, 1] > similarity[1, 2] + 0.2
    # padding (texts 0 and 2 are one token shorter than text 1) and the length-sorted batching change
    # nothing: one text alone gives the same row
    alone = embed_texts(texts[2:], cache=False)
    assert np.allclose(alone[0], vectors[2], atol=1e-5)


def _train_briefly(x):
    torch.manual_seed(0)
    model = RQVAE(input_dim=x.shape[1], hidden_dims=[64], latent_dim=16, codebook_sizes=(64, 64))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(30):
        _, loss = model(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.state_dict()


def test_training_is_bitwise_reproducible():
    # identical runs must give identical codebooks: no kernel whose CPU backward depends on thread timing
    x = torch.randn(2048, 48, generator=torch.Generator().manual_seed(1))
    first, second = _train_briefly(x), _train_briefly(x)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_embed_texts_mean_pools_a_causal_lm_without_pad_token(tmp_path):
    # LC-Rec embeds item text with its LLM: a tiny random Llama whose tokenizer has an eos but no pad token
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<eos>", "<unk>", "toy", "story", "heat", "drama", "comedy"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", unk_token="<unk>").save_pretrained(tmp_path)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    texts = ["toy story comedy", "heat drama", "toy story comedy heat drama drama"]
    vectors = embed_texts(texts, model=str(tmp_path), batch_size=3, cache=False)
    assert vectors.shape == (3, 16) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    alone = embed_texts(texts[1:2], model=str(tmp_path), cache=False)  # padding in a batch changes nothing
    assert np.allclose(alone[0], vectors[1], atol=1e-5)
