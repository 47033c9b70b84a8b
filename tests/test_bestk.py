"""BestK against a brute-force sort of everything folded in: entries, order and windows."""

from __future__ import annotations

import torch

from neuronscope.record.bestk import PAD_CODE, BestK, lex_order, merge_order


def test_bestk_keeps_the_k_smallest_rank_code_pairs_with_their_windows():
    g = torch.Generator().manual_seed(3)
    n, k, t = 5, 4, 3
    best = BestK(n, k, t, torch.float32)
    seen: list[list[tuple[float, int, torch.Tensor]]] = [[] for _ in range(n)]
    code = 0
    for batch in range(12):
        acts = torch.randn(6, t, n, generator=g)  # (windows, positions, neurons)
        c = 1 + batch % 3  # candidates per neuron, in any order, some padded
        cols = torch.randperm(n, generator=g)[: 2 + batch % 4]
        rank = torch.randint(0, 5, (len(cols), c), generator=g).float()  # ties on rank
        codes = torch.arange(code, code + len(cols) * c).reshape(len(cols), c)
        codes = codes[:, torch.randperm(c, generator=g)]  # candidates unordered
        code += len(cols) * c
        window = torch.randint(0, 6, (len(cols), c), generator=g)
        pad = torch.rand(len(cols), c, generator=g) < 0.2
        rank[pad], codes[pad] = torch.inf, PAD_CODE
        best.fold(cols, rank, codes, -rank, window, acts)
        for i, col in enumerate(cols.tolist()):
            for j in range(c):
                if not pad[i, j]:
                    seen[col].append((float(rank[i, j]), int(codes[i, j]), acts[window[i, j], :, col].clone()))
    got_rank, got_code, got_value, got_win = best.entries()
    m = min(len(s) for s in seen)
    assert got_code.shape[1] == min(k, max(len(s) for s in seen)) and m >= k
    for col in range(n):
        want = sorted(seen[col], key=lambda e: (e[0], e[1]))[:k]
        assert got_rank[col].tolist() == [e[0] for e in want]
        assert got_code[col].tolist() == [e[1] for e in want]
        assert torch.equal(got_value[col], -got_rank[col])
        assert torch.equal(got_win[col], torch.stack([e[2] for e in want]))


def test_merge_order_is_the_lexicographic_order_of_old_entries_then_candidates():
    g = torch.Generator().manual_seed(0)
    m, k = 7, 5
    for trial in range(200):
        c = 1 + trial % 6  # one candidate (counted) and wider rows (sorted)
        rank = torch.randint(0, 4, (m, k + c), generator=g).float()  # ties on rank and on both keys
        code = torch.randint(0, 6, (m, k + c), generator=g)
        pad = torch.rand(m, k + c, generator=g) < 0.3
        rank[pad], code[pad] = torch.inf, PAD_CODE
        old = lex_order(rank[:, :k], code[:, :k])  # old entries come sorted
        old_rank, old_code = rank[:, :k].gather(1, old), code[:, :k].gather(1, old)
        want = lex_order(torch.cat([old_rank, rank[:, k:]], 1), torch.cat([old_code, code[:, k:]], 1))
        assert torch.equal(merge_order(old_rank, old_code, rank[:, k:], code[:, k:]), want)
