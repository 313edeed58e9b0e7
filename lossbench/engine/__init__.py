"""Training one run or a stack of K runs with one loop: a member's state and records (member), the stack
(stack), the loop (train), the numerics monitors (numerics) and what they diagnose (diagnosis), PESG
(pesg), a distillation teacher's logits (teacher)."""
