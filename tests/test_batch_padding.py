"""answer_batch forms its forward batches longest first: a batch never pads short windows to a
long one when windows of similar length could share it."""
import torch


def test_batches_pad_windows_of_similar_length(qa_fp, stories):
    pipeline = qa_fp.pipeline
    short, long = stories[0].context[:200], " ".join(s.context for s in stories)
    questions = [stories[0].questions[0]] * 4
    contexts = [short, long, short, long]                   # pair order alternates the lengths
    windows = pipeline.windows(questions, contexts)
    lengths = [len(w.ids) for w in windows]
    shapes, model = [], pipeline.model

    def recording(ids, types, mask):                        # ids: [B, S]
        shapes.append(tuple(ids.shape))
        return model(ids, types, mask)

    pipeline.model = recording
    try:
        got = pipeline.logits(windows, batch_size=2)
    finally:
        pipeline.model = model
    padded = sum(b * s for b, s in shapes)
    assert padded == sum(sorted(lengths, reverse=True)[i] * min(2, len(lengths) - i)
                         for i in range(0, len(lengths), 2)), (lengths, shapes)
    assert min(lengths) < max(lengths) and shapes[-1][1] < max(lengths), (lengths, shapes)
    # logits come back in window order, each as long as its window
    assert [len(s) for s, _ in got] == lengths
    one = pipeline.logits(windows[1:2], batch_size=1)[0]
    assert torch.allclose(torch.from_numpy(got[1][0]), torch.from_numpy(one[0]), atol=1e-4)
