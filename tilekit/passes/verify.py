"""Structural checks: SSA dominance, region terminators and arities, types matching ``infer_types``."""
from ..errors import CompileError
from ..ir import TypeRuleError, infer_types
from ..optable import IR_OPS, Trait, has


def _fail(op, msg):
    loc = op.loc
    raise CompileError(f"IR verification failed at {op.name}: {msg}", loc.filename if loc else None,
                       loc.lineno if loc else None, loc.line if loc else None)


def verify(fn):
    defined = {p.value for p in fn.params}

    def check_block(block, scope, expect_yield=None):
        scope = set(scope) | set(block.args)
        for i, op in enumerate(block.ops):
            if op.name not in IR_OPS:
                _fail(op, "not an op of tilekit's op table (tilekit/optable.py)")
            for v in op.operands:
                if v not in scope:
                    _fail(op, f"operand {v} is used before it is defined or outside its region")
            if op.name == "yield":
                if i != len(block.ops) - 1:
                    _fail(op, "yield must end its block")
                if expect_yield is not None and [v.type for v in op.operands] != list(expect_yield):
                    _fail(op, f"yields {[str(v.type) for v in op.operands]}, expected {[str(t) for t in expect_yield]}")
            try:
                want = infer_types(op)
            except TypeRuleError as e:
                _fail(op, str(e))
            if [r.type for r in op.results] != want:
                _fail(op, f"result types {[str(r.type) for r in op.results]} differ from the rule's {[str(t) for t in want]}")
            for r in op.regions:
                if r.terminator is None:
                    _fail(op, "region does not end in yield")
            if op.name == "for":
                body = op.regions[0]
                carried = [v.type for v in op.operands[3:]]
                if [a.type for a in body.args[1:]] != carried:
                    _fail(op, "loop block arguments differ from the carried values")
                check_block(body, scope, carried)
            elif op.name == "if":
                for r in op.regions:
                    check_block(r, scope, [t for t in op.attrs["result_types"]])
            elif op.name == "scan":
                check_block(op.regions[0], set(), [a.type for a in op.regions[0].args[:len(op.operands)]])
            elif op.regions or has(op.name, Trait.REGION):
                _fail(op, "unexpected region" if op.regions else "missing region")
            scope.update(op.results)
        if expect_yield is not None and block.terminator is None:
            raise CompileError("region does not end in yield")

    check_block(fn.body, defined)
    return fn
