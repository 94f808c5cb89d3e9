import torch

# One thread per test process: the suite runs on 2-core machines where oversubscribed intra-op threads
# make small-tensor work many times slower; results do not depend on the thread count.
torch.set_num_threads(1)
