"""An attack: random corners of the eps-ball, the baseline a real attack has to beat.

Each try moves every pixel by +eps or -eps at random (the corners of the L-inf
ball, where a linear model's loss is largest on average) and keeps the image if
the model misclassifies it. It needs no gradients, only predictions: a
black-box attack whose work is counted in model queries.
"""

import torch
from pydantic import Field

import bionas
from bionas.attacks import predict


class RandomSign(bionas.Attack):
    name = "random_sign"
    description = "Random corners of the L-inf eps-ball, first one that fools the model (example plugin)."
    family = "black-box"
    budget = "eps"
    work_unit = "queries"

    class Options(bionas.PluginOptions):
        eps: bionas.Fractional = Field(default=8 / 255, description="L-inf budget in [0, 1] pixel units; 8/255 works.")
        tries: int = Field(default=10, gt=0, description="Random corners tried per image.")
        seed: int = Field(default=0, ge=0, description="Seed of the random signs (a torch.Generator).")

    def perturb(self, model, images, labels, generator):
        adversarial = images.clone()
        fooled = torch.zeros(len(images), dtype=torch.bool, device=images.device)
        queries = torch.zeros(len(images))
        for _ in range(self.options.tries):
            todo = (~fooled).nonzero().squeeze(1)
            if len(todo) == 0:
                break
            signs = torch.randint(0, 2, images[todo].shape, generator=generator, device=images.device) * 2 - 1
            candidate = (images[todo] + self.options.eps * signs).clamp(0, 1)
            wrong = predict(model, candidate).argmax(1) != labels[todo]
            queries[todo.cpu()] += 1
            adversarial[todo[wrong]] = candidate[wrong]
            fooled[todo[wrong]] = True
        return adversarial, queries
