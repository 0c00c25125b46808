"""Adversarial training for image targets: a generator (the network) against a patch critic.

The critic (the zoo's patch discriminator, logits, :func:`.network.load_discriminator`) sees
normalised target images; a *conditional* critic (pix2pix, the ``translation`` zoo entry) sees the
sources too, normalised as the network sees them, so it judges whether an image goes with its
input: ``D(x, y)``. The generator minimises ``content + adversarial_weight * BCE(D(x, G(x)), real)``,
the critic ``BCE(D(x, y), real) + BCE(D(x, G(x)), fake)``, where ``content`` is the content loss
(L1 or L2) between the *normalised* target and output: unit-free, so that ``adversarial_weight``
means the same for reflectances in the 1000s as for 8-bit images (with the content loss in target
units, an L1 of 50 reflectance units, the adversarial term at 1e-3 was four orders of magnitude
below it and changed nothing). Logged per epoch: ``loss`` (the content loss in target units, as a
plain run logs it), ``adversarial`` and ``discriminator_loss``.

This module imports TensorFlow and Keras when it is imported (through :mod:`..device`); the
training loop imports it only for a ``gan`` run.
"""

from __future__ import annotations

from ..device import tensorflow

tf = tensorflow()
import keras  # noqa: E402  (after TensorFlow is configured)

from .config import Task, TrainConfig  # noqa: E402
from .network import make_loss, make_optimizer, normalised_sources, source_inputs, variance  # noqa: E402
from .view import TrainingView  # noqa: E402

LOGGED = ("loss", "adversarial", "discriminator_loss")


class AdversarialTrainer(keras.Model):
    """A Keras model whose ``fit`` trains ``generator`` and ``critic`` in turn, one step each per batch.

    Calling it runs the generator. ``optimizer`` (given to ``compile``) updates the generator,
    ``critic_optimizer`` the critic; both scale their losses (mixed precision). A ``conditional``
    critic takes ``[*sources, image]``, else the image alone. ``normalise`` (the critic's first
    layer on the image) standardises targets and outputs for the content term of the objective.
    """

    def __init__(self, generator, critic, content_loss, adversarial_weight: float, critic_optimizer,
                 normalise, conditional: bool = False):
        super().__init__(name="adversarial_trainer")
        self.generator, self.critic, self.conditional = generator, critic, conditional
        self.normalise = normalise
        self.content_loss = content_loss
        self.adversarial_weight = float(adversarial_weight)
        self.critic_optimizer = critic_optimizer
        self.bce = keras.losses.BinaryCrossentropy(from_logits=True)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in LOGGED}

    @property
    def metrics(self):
        return list(self.trackers.values())  # reset by Keras at each epoch start

    def call(self, inputs, training=False):
        return self.generator(inputs, training=training)

    def judge(self, inputs, image):
        """The critic's logits for ``image`` (given the generator's ``inputs`` when conditional)."""
        if not self.conditional:
            return self.critic(image, training=True)
        sources = list(inputs) if isinstance(inputs, (tuple, list)) else [inputs]
        return self.critic([*sources, image], training=True)

    def train_step(self, data):
        inputs, target = data
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            fake = self.generator(inputs, training=True)
            real_score = self.judge(inputs, target)
            fake_score = self.judge(inputs, fake)
            content = self.content_loss(target, fake)
            objective = self.content_loss(self.normalise(target), self.normalise(fake))
            adversarial = self.bce(tf.ones_like(fake_score), fake_score)
            d_loss = self.bce(tf.ones_like(real_score), real_score) + self.bce(tf.zeros_like(fake_score), fake_score)
            g_scaled = self.optimizer.scale_loss(objective + self.adversarial_weight * adversarial)
            d_scaled = self.critic_optimizer.scale_loss(d_loss)
        for tape, loss_value, model, optimizer in ((g_tape, g_scaled, self.generator, self.optimizer),
                                                   (d_tape, d_scaled, self.critic, self.critic_optimizer)):
            variables = model.trainable_variables
            optimizer.apply_gradients(zip(tape.gradient(loss_value, variables), variables))
        for name, value in zip(LOGGED, (content, adversarial, d_loss)):
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}


def adversarial_view(network, discriminator, task: Task, config: TrainConfig) -> TrainingView:
    """A compiled :class:`AdversarialTrainer` for ``network`` as the training view (optimisers built)."""
    target = keras.Input((None, None, int(task.label["bands"])), name="target")
    normalise = keras.layers.Normalization(mean=task.label["mean"], variance=variance(task.label["std"]),
                                           name="normalise_target")
    normalised = normalise(target)
    conditional = len(discriminator.inputs) > 1
    if conditional:
        sources = source_inputs(task)
        critic = keras.Model([*sources, target], discriminator([*normalised_sources(task, config, sources), normalised]),
                             name="critic")
    else:
        critic = keras.Model(target, discriminator(normalised), name="critic")
    trainer = AdversarialTrainer(network, critic, make_loss(task, config), config.adversarial_weight,
                                 make_optimizer(config), normalise, conditional)
    trainer.compile(optimizer=make_optimizer(config))
    trainer.optimizer.build(network.trainable_variables)
    trainer.critic_optimizer.build(critic.trainable_variables)
    return TrainingView(trainer, None)
