"""The KernelBench-format problem text that the bench tests write into their problem folders."""

PROBLEM = '''
import torch
import torch.nn as nn

ROWS, COLS = 33, 47


class Model(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, x, y):
        return x * self.scale + y


def get_inputs():
    return [torch.randn(ROWS, COLS), torch.randn(ROWS, COLS)]


def get_init_inputs():
    return [2.0]
'''
