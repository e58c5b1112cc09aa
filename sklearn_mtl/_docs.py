"""Shared docstring sections of the estimators (numpydoc), so that ``help()`` on each
public class lists every parameter and attribute."""

# The paragraph ends the extended summary: numpydoc reads every line inside
# Parameters as a parameter. The blank last line lets the next heading be one.
PARAMETERS = """\
    Task-keyed parameters (``tasks``, ``losses``, ``loss_weights``,
    ``auxiliary_tasks``, ``head_inputs``, ``task_depth``, ``class_weight``)
    name tasks by Y's own column labels (str, int, tuple, ...); a string
    key also reaches the one task whose label prints as it, so that
    ``set_params(loss_weights__0=2)`` reaches column ``0``.

    Parameters
    ----------
    tasks : None, list, or dict task -> kind, default=None
        None: every column of Y is a task, its kind inferred by scikit-learn's
        target-type rules (continuous -> 'regression'; two labels -> 'binary';
        more -> 'multiclass'). A list names the columns of an array Y (or
        selects columns of a DataFrame / dict). A dict overrides the kind of
        the named tasks ('regression', 'binary', 'multiclass' or
        'classification').
    losses : None or dict task -> loss, default=None
        Per-task loss. Names: 'mse', 'mae', 'huber', 'poisson' (regression),
        'bce', 'hinge' (binary), 'cross_entropy', 'hinge' (multiclass). A torch
        loss module with a ``reduction`` attribute gets per-row weights and
        masking; any other callable ``loss(y_pred, y_true)`` is called on the
        observed rows and must return the mean. Defaults: 'mse', 'bce',
        'cross_entropy'.
    loss_weights : None or dict task -> float, default=None
        Non-negative weight of each task's loss; tasks not named get 1.0. Kept
        as passed; ``set_params(loss_weights__<task>=w)`` sets one entry.
    weighting : str or Weighting, default='static'
        How the task losses are combined: 'static' (the weighted sum),
        'uncertainty', 'dwa', 'rlw', 'famo', 'validation_trend',
        'alternating', or a gradient method ('gradnorm', 'mgda', 'mgda_ub',
        'pcgrad', 'cagrad', 'imtl', 'upgrad'); or an instance from
        :mod:`sklearn_mtl.weighting` with its own hyperparameters (searchable
        as ``weighting__<param>``).
    loss_normalization : {'none', 'initial', 'running_mean'}, default='none'
        Divide each task's training loss by its first observed loss or by a
        running mean of it (momentum 0.9) before weighting, so that losses on
        different scales start equal. Validation losses are reported raw.
    architecture : str or Architecture, default='hard'
        How the tasks share layers below their heads: 'hard' (one trunk),
        'soft', 'cross_stitch', 'mmoe', 'ple', or an instance from
        :mod:`sklearn_mtl.architectures`.
    module : torch.nn.Module instance or class, default=None
        Your own trunk mapping X (batch, n_features) to a representation
        (batch, D), e.g. a CNN; replaces the architecture. An instance is
        copied, never trained in place.
    auxiliary_tasks : list of str, default=None
        Columns of Y that are trained (they shape the shared layers) but not
        predicted, scored or needed at predict time.
    head_inputs : dict task -> list of tasks, default=None
        Heads that also read other heads' raw outputs (logits or standardised
        values), trained end to end; cycles are rejected.
    task_depth : dict task -> int, default=None
        Supervise a task at shared layer k (1-based) instead of the last one
        (hard sharing only; not with gradient-based weighting).
    feature_embedding : {None, 'piecewise_linear', 'periodic'}, default=None
        Embed each numerical feature in ``embedding_dim`` values before the
        shared layers (Gorishniy et al., "On Embeddings for Numerical Features
        in Tabular Deep Learning", NeurIPS 2022), with a per-feature linear
        map and ReLU after the encoding. 'piecewise_linear': ``n_bins`` bins
        at quantiles of the training rows, fitted once on the first fit
        (continued training and prediction keep them), one component per bin
        (0 below it, 1 above, linear inside); suits thresholds and steps and
        needs no scaling. 'periodic': cos and sin of 16 trainable
        frequencies per feature, initialised from N(0, 0.1²): standardise the
        features first. Not with ``module=`` (your module takes the raw
        features). The embedding is shared by all tasks.
    n_bins : int, default=16
        Bins per feature of the piecewise linear encoding (>= 2); a feature
        with fewer distinct values gets fewer bins.
    embedding_dim : int, default=8
        Width of each feature's embedding: the shared layers read
        ``n_features * embedding_dim`` values.
    hidden_layer_sizes : tuple of int, default=(64, 64)
        Widths of the shared layers.
    head_hidden_sizes : tuple of int, default=(20,)
        Widths of each task head's hidden layers (before its output layer).
    activation : str, default='relu'
        Activation of the hidden layers.
    dropout : float, default=0.0
        Dropout after each hidden layer.
    ensemble_size : int, default=1
        Members of a parameter-efficient ensemble trained at once in one
        network (TabM-mini): each member scales the inputs by its own
        learned vector (initialised with random signs) and has its own task
        heads; the representation layers are shared. Every member trains on
        every row; predictions are the member mean (regression) or the mean
        probabilities (classification), and validation losses and early
        stopping are those of the combined prediction. 1: one plain network.
        Not with ``head_inputs``, ``task_depth`` or a gradient-based
        weighting.
    sharing : {'shared', 'blend', 'auto'}, default='shared'
        What predicts each task. 'shared': the multi-task network. 'blend'
        and 'auto' also train one network per task on that task alone (the
        same architecture and parameters, static weighting, the task's
        labelled training rows, early-stopped on the same validation rows;
        trained together as one batched stack where the settings allow,
        which costs less than that many fits). 'blend': each task predicted
        by the mean of the two (mean value; mean class probabilities), a
        hedge against negative transfer. 'auto': per task, the shared
        network unless the single-task network or the mean has a validation
        loss lower by more than one standard error of the paired difference
        (then the lower of the two); a task with a handful of validation
        labels keeps the shared network. ``sharing_`` says what was chosen,
        ``sharing_losses_`` the validation losses it was chosen on: whether
        sharing helped each task. Continued training (``warm_start``,
        ``partial_fit``) trains and predicts with the shared network alone.
    retrieval : {'off', 'on', 'auto'}, default='auto'
        Retrieval features (in the spirit of TabR, Gorishniy et al. 2024):
        the network also reads, per task, the mean label of each row's 1, 4,
        16, ... and ``n_neighbors`` nearest training rows labelled for that
        task (Euclidean distance in X; regression labels standardised, class
        labels one-hot) and its distance to the nearest. A training row is
        never its own neighbour (an exact duplicate of it is); validation
        rows and new rows look up the training rows only. It pays where rows
        recur, e.g. people observed in several years, whose labels a smooth
        function of X cannot look up. 'on': always. 'auto': for the tasks
        with at least 500 validation labels, after a plain fit that early
        stopping ended (or of at least ten ``patience`` windows), the
        neighbours' labels alone are scored on the validation rows; where
        they predict none of those tasks better than the network by a
        standard error (the usual case), the model is the plain one and the
        check costs one neighbour search; otherwise a second network with the
        features is trained, and each of those tasks is predicted by it if
        its validation loss is lower by more than one standard error
        (``retrieval_``, ``retrieval_losses_``). 'off': never. A model that
        uses the features keeps its training rows for the lookup, and cannot
        be exported to ONNX; ``partial_fit`` refuses 'on'. In the
        stacked searches 'auto' stacks the plain networks and runs the check
        per candidate and fold; 'on' fits each candidate on its own.
    n_neighbors : int, default=16
        The largest neighbour count of ``retrieval``.
    alpha : float, default=0.0
        L2 penalty (weight decay) on the weights, not the biases.
    l1 : float, default=0.0
        Weight of an L1 penalty ``l1 * sum(|w|)`` over the network's weight
        matrices (not biases, ensemble adapters or embedding frequencies),
        added to the training loss: it drives weights to
        exactly zero, e.g. those of uninformative features. Next to ``alpha``
        (L2, as weight decay); both are searchable.
    optimizer : str or torch.optim.Optimizer class, default='adam'
        'adam', 'adamw', 'sgd', 'rmsprop' or an optimizer class.
    optimizer_kwargs : dict, default=None
        Extra arguments of the optimizer (e.g. ``{'momentum': 0.9}``).
    lr : float, default=5e-4
        Learning rate (chosen on the quality benchmark: half of torch's and
        scikit-learn's 1e-3 overfits the small tables less, a task with few
        labels above all).
    lr_schedule : {None, 'cosine', 'plateau'}, default=None
        None keeps ``lr``; 'cosine' anneals it to 0 over ``max_epochs`` (a
        cosine, stepped each epoch); 'plateau' halves it when the validation
        loss (the training loss without validation) has not improved for
        ``max(1, patience // 3)`` epochs.
    batch_size : int or 'auto', default='auto'
        Rows per training step. 'auto': a sixteenth of the training rows,
        at least 64 and at most 256 (about 16 steps per epoch on small
        tables, 256-row steps from 4,096 training rows on).
    max_epochs : int, default=200
        Passes over the training data (early stopping usually ends training
        well before; at ``lr=5e-4`` larger tables need more than 100).
    early_stopping : bool, default=True
        Hold out validation rows (``validation_fraction``, or your own
        ``X_val``/``y_val`` in ``fit``) and track each task's validation loss:
        each task is predicted from the epoch where its own validation loss was
        lowest (``best_epoch_``), so a task that overfits early does not cost
        another its later best, and training stops when no task has improved
        by ``tol`` for ``patience`` epochs. A ``ConvergenceWarning`` says when
        ``max_epochs`` ends a fit in which some task was still improving.
        ``partial_fit`` trains on all the rows it is given, without early
        stopping (as scikit-learn's MLP). A training loss that turns
        non-finite stops any fit with ``TrainingDivergedError`` (a
        ``ValueError``); with early stopping the best finite epochs are
        restored instead, with a warning.
    validation_fraction : float in (0, 1) or None, default=None
        Fraction of the rows held out for validation. None: 0.1 with early
        stopping, else no validation. The split is stratified by each row's
        set of labelled tasks, and a task with few labels keeps at least
        ``min(25, n_labels // 4)`` validation labels.
    patience : int, default=10
        Epochs without improvement of any task before early stopping. Tasks of
        loss weight 0 are not trained and do not count (their validation loss
        only drifts with the shared layers).
    tol : float, default=1e-4
        Relative improvement of a task's best validation loss that counts as
        progress for early stopping.
    class_weight : None, 'balanced' or dict task -> ('balanced' or dict label -> weight)
        Per-class weights of classification tasks' losses ('balanced' counts
        classes weighted by ``sample_weight``). scikit-learn's forms work too:
        a dict label -> weight when there is one classification task, a list
        with one entry per task (None for none).
    warm_start : bool, default=False
        ``fit`` trains the fitted network ``max_epochs`` more epochs (with the
        current ``lr`` and ``loss_weights``) instead of starting over.
        ``partial_fit`` always continues, one epoch per call.
    random_state : int, RandomState or None, default=None
        Seeds initialisation, shuffling, dropout and the validation split.
        The same value gives the same model on CPU. The global torch RNG is
        left as it was.
    device : str or torch.device, default='cpu'
        'cpu', 'cuda', 'cuda:N' or 'auto' (CUDA when available). On CUDA the
        training data stay on the GPU for the whole fit when they fit.
        Inference runs in float64 on a copy of the network, so that a row's
        prediction does not depend on how many rows are predicted with it.
    precision : {'float32', 'bf16'}, default='float32'
        'bf16' runs the forward pass under bfloat16 autocast (for GPUs with
        bfloat16 support); losses stay float32.
    compile : bool, default=False
        Train through ``torch.compile``. Off by default: it did not pay off
        on CPU in our benchmarks.
    verbose : int, default=0
        0: silent; 1: a per-epoch table (losses overall and per task, kept
        narrow for many tasks); 2: also an epoch-level progress bar (tqdm: a
        widget in Jupyter with ipywidgets, else text; time left and per-task
        losses in its postfix).
    callbacks : list of skorch callbacks, default=None
        Extra callbacks (instances or ``(name, callback)`` pairs; copied,
        never mutated).

"""

ATTRIBUTES = """\
    Attributes
    ----------
    net_ : skorch.NeuralNet
        The trained network; ``net_.history`` holds per-epoch losses, with
        ``train_loss_<task>`` and ``valid_loss_<task>`` per task.
    tasks_ : list of Task
        Each task's kind, loss and fitted encoder.
    task_names_ : list of str
    classes_ : ndarray, list or dict
        Class labels of the classification tasks, in the form of y: an array
        for a 1-D y (one task), a list with one entry per column for a 2-D
        array y (None for a regression task, scikit-learn's multi-output
        form), a dict task -> array for a DataFrame or dict y.
        ``predict_proba`` answers in the same form; ``predict`` answers in
        y's own container (DataFrame in, DataFrame out, under X's index when X
        is a DataFrame). ``predict_proba(X, as_frame=True)`` gives DataFrames
        with the classes as columns; ``summary()`` describes the network.
    n_features_in_, feature_names_in_ : as in scikit-learn.
    n_iter_ : int
        Epochs run.
    best_epoch_ : dict task -> int
        With early stopping (validation data): the epoch (1-based, counted
        over all the fit calls of this model) whose weights predict each
        task, the one of its lowest validation loss. Absent without
        validation data.
    sharing_ : dict task -> str
        What predicts each task: 'shared', 'single' or 'blend' (see
        ``sharing``).
    sharing_losses_ : DataFrame (task x source)
        With ``sharing`` 'blend' or 'auto': each task's validation loss when
        predicted by the shared network, by its single-task network and by
        their mean (columns 'shared', 'single', 'blend'), and the standard
        errors of the latter two's differences from the first ('single_se',
        'blend_se').
    retrieval_ : dict
        Task -> whether it is predicted with retrieval features. With
        ``retrieval='auto'`` such a task is predicted by the second network
        (a shared one), whatever ``sharing_`` says of the plain network.
    retrieval_losses_ : DataFrame (task x source)
        With ``retrieval='auto'``: the validation losses (squared error on
        the standardised scale, or log loss) of the plain network
        ('plain'), of the neighbours' labels alone ('neighbours') and, where
        trained, of the network with retrieval features ('retrieval', with
        'retrieval_se', the standard error of its difference from 'plain').
    loss_curve_ : list of float
        The training loss of each epoch (scikit-learn's MLP attribute).
    validation_loss_curve_ : list of float or None
        The validation loss of each epoch; None without validation data.
    task_loss_curves_, task_validation_curves_ : DataFrame (epoch x task)
        Each task's training and validation loss per epoch (the latter None
        without validation data).
    task_validation_scores_ : DataFrame (epoch x task) or None
        Each task's validation accuracy or R² per epoch (history keys
        ``valid_score_<task>``).
    task_affinity_ : DataFrame (task x task)
        Only after a fit with a :class:`sklearn_mtl.callbacks.TaskAffinity`
        callback: what it recorded (rows: source task, columns: target).
"""

MIXED = """\
One shared network, one head per task: regression and classification tasks mixed.

    A shared MLP trunk (``hidden_layer_sizes``) feeds one small head per task
    (``head_hidden_sizes``, then the task's output layer). The training loss
    is ``sum_t w_t * L_t`` with ``w_t`` from ``loss_weights`` (default 1),
    where ``L_t`` is task t's mean loss over the rows where it has a label.
    Training runs on skorch and PyTorch; the fitted skorch net is ``net_``.

"""

MIXED_NOTES = """
    Notes
    -----
    This estimator is neither a classifier nor a regressor to scikit-learn
    (``is_classifier`` is False): cross-validation uses plain K-fold, since
    stratifying on several columns is not defined. ``score`` is the mean over
    tasks of R² (regression) and accuracy (classification); for other metrics
    and per-task scores in searches see :mod:`sklearn_mtl.metrics`
    (``make_task_scorers``, ``task_report``). A plain ``scoring='<metric>'``
    works for one task from a 1-D y without missing labels (metrics on
    predictions only: this estimator is no classifier); otherwise it is
    refused with an error naming those scorers.
"""

REGRESSOR = """\
Multi-task network whose tasks are all regression.

    Takes what ``MLPRegressor`` takes (a 1-D y, or a numeric 2-D Y with one
    task per column) and named tasks (DataFrame, dict); missing labels are
    masked per task. ``score`` is the uniform average of the per-task R²
    (scikit-learn's ``r2_score`` default), each over its observed labels.
    There is no ``predict_proba`` or ``classes_``; ``partial_fit`` takes no
    ``classes``. A plain ``scoring='r2'`` (any regression metric name) works
    for a 1-D y without missing labels; with several tasks or missing labels
    use :func:`sklearn_mtl.make_task_scorers` (the plain name is refused
    with an error saying so).

"""

CLASSIFIER = """\
Multi-task network whose tasks are all classification.

    With a 1-D y it is an ordinary scikit-learn classifier: ``classes_`` is an
    array, ``predict_proba`` an (n_samples, n_classes) array. With a 2-D
    array Y (one task per column) it follows scikit-learn's multi-output
    convention (as ``RandomForestClassifier``): ``classes_`` and
    ``predict_proba`` are lists with one entry per column. With named tasks
    (DataFrame or dict y) both are dicts task -> array. ``class_weight`` also
    takes scikit-learn's forms: a dict label -> weight for a single task, or a
    list of them, one per column. ``score`` is the mean over tasks of the
    accuracy, each over its observed labels. A plain ``scoring='accuracy'``
    or ``'roc_auc'`` (any classification metric name) works for a 1-D y
    without missing labels; otherwise use
    :func:`sklearn_mtl.make_task_scorers` (the plain name is refused with an
    error saying so).

    As a classifier it gets stratified folds from ``cv=<int>`` when y is one
    column. When y has missing labels, pass the splitter yourself (e.g.
    ``cv=KFold(5, shuffle=True)``): scikit-learn inspects y's labels to
    choose the folds and fails on NaN among them.

"""
